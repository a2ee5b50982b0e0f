"""DS9 region text of a detection: the 90 % error circle and every listed source.

(``bricks/regions.py`` holds the extraction regions of the light curve and the
spectrum; this module only writes the DS9 file of the ``detect`` brick.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from astropy.wcs import WCS

from bricks.detect_search import Candidate


def ds9_region(position: Mapping[str, Any], sources: Sequence[Candidate], wcs: WCS) -> str:
    """DS9 region file (fk5): the total 90 % error circle, then a point per source.

    Parameters
    ----------
    position
        The ``position`` product (``ra``, ``dec`` in degrees, ``err90_arcsec``).
    sources
        The source list, sky pixels.
    wcs
        Sky WCS turning the source pixels into RA/Dec.

    Returns
    -------
    str
        Region text; with no detection, the header and a comment saying so.
    """
    lines = [
        "# Region file format: DS9 version 4.1",
        'global color=green dashlist=8 3 width=1 font="helvetica 10 normal roman" '
        "select=1 highlite=1 dash=0 fixed=0 edit=1 move=1 delete=1 include=1 source=1",
        "fk5",
    ]
    if position.get("status") == "detected":
        lines.append(
            f"circle({position['ra']:.6f},{position['dec']:+.6f},"
            f'{position["err90_arcsec"]:.2f}") # color=red width=2 '
            f'text={{MXT 90% ({position["err90_arcsec"]:.1f}")}}'
        )
    else:
        lines.append(f"# no detection: {position.get('reason', 'no source')}")
    for i, source in enumerate(sources, start=1):
        ra, dec = wcs.all_pix2world([[source.x, source.y]], 1)[0]
        lines.append(
            f"point({float(ra) % 360.0:.6f},{float(dec):+.6f}) # point=x "
            f"text={{S{i} {source.significance:.1f} sigma}}"
        )
    return "\n".join(lines) + "\n"
