"""OGIP header conventions shared by the L3 products (light curve, spectra, responses)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from astropy.io import fits

#: Observation keywords carried from the L2 EVENTS header to every L3 product.
OBSERVATION_KEYWORDS = (
    "TELESCOP",
    "INSTRUME",
    "OBS_ID",
    "OBJECT",
    "PROGRAM",
    "RA_OBJ",
    "DEC_OBJ",
    "RA_PNT",
    "DEC_PNT",
    "PA_PNT",
    "TRIGTIME",
    "BURST_ID",
    "DATE-OBS",
    "DATE-END",
    "TSTART",
    "TSTOP",
    "TIMESYS",
    "MJDREFI",
    "MJDREFF",
    "TIMEUNIT",
    "TIMEREF",
    "TASSIGN",
    "CLOCKAPP",
)

MISSION_DEFAULTS = {
    "TELESCOP": ("SVOM", "mission"),
    "INSTRUME": ("MXT", "instrument"),
    "FILTER": ("NONE", "MXT has no filter wheel"),
    "TIMESYS": ("TT", "time system"),
    "MJDREFI": (57754, "MJD reference day (2017-01-01)"),
    "MJDREFF": (0.0, "MJD reference fraction"),
    "TIMEUNIT": ("s", "unit of time keywords"),
}


def observation_cards(header: fits.Header, skip: Iterable[str] = ()) -> list[fits.Card]:
    """Observation keywords of ``header`` (with mission defaults where absent).

    Parameters
    ----------
    header
        Usually the L2 ``EVENTS`` header.
    skip
        Keywords not to return (set by the caller itself).
    """
    skipped = set(skip)
    cards: list[fits.Card] = []
    for key, (value, comment) in MISSION_DEFAULTS.items():
        if key not in skipped and key not in header:
            cards.append(fits.Card(key, value, comment))
    for key in OBSERVATION_KEYWORDS:
        if key in header and key not in skipped:
            cards.append(fits.Card(key, header[key], header.comments[key]))
    return cards


def apply_cards(header: fits.Header, cards: Iterable[fits.Card]) -> None:
    """Set each card on ``header`` (a header the caller is building, never an input)."""
    for card in cards:
        header[card.keyword] = (card.value, card.comment)


def gti_hdu(intervals: np.ndarray, source_header: fits.Header) -> fits.BinTableHDU:
    """An OGIP GTI extension for ``intervals`` (``(n, 2)``, mission seconds)."""
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column("START", "D", unit="s", array=intervals[:, 0]),
            fits.Column("STOP", "D", unit="s", array=intervals[:, 1]),
        ],
        name="GTI",
    )
    apply_cards(hdu.header, observation_cards(source_header))
    hdu.header["HDUCLASS"] = ("OGIP", "format conforms to OGIP standards")
    hdu.header["HDUCLAS1"] = ("GTI", "good time intervals")
    hdu.header["HDUCLAS2"] = ("STANDARD", "")
    return hdu


def primary_hdu(source_header: fits.Header, creator: str) -> fits.PrimaryHDU:
    """An empty primary HDU with the observation keywords and the creating brick."""
    hdu = fits.PrimaryHDU()
    apply_cards(hdu.header, observation_cards(source_header))
    hdu.header["CREATOR"] = (creator, "brick and version that wrote the file")
    return hdu
