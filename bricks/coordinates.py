"""Coordinates brick: calibrated events → L1 events with DETX/DETY, sky X/Y and RA/Dec.

The model of Swift-XRT's coordinator:

1. the attitude (RA, Dec, ROLL at 1 Hz) is interpolated at each event time, in the
   tangent plane of the nominal pointing (so RA wrapping through 0/360 and pointings
   near a pole interpolate correctly) and with the roll unwrapped;
2. RAW → DET: DETX/DETY = RAWX/RAWY in this model (kept apart for future teldef offsets);
3. DET → standard coordinates about the event's pointing (gnomonic, +DETY at position
   angle ROLL, +DETX at ROLL − 90°) → RA/Dec (a vectorised spherical rotation);
4. RA/Dec → sky X/Y on the grid of bricks/wcs.py, with the OGIP event-file WCS keywords.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits

from bricks.base import Brick, BrickConfig
from bricks.calibrate import copy_header_keywords, primary_with_creator
from bricks.calibration import Geometry, require_calibration
from bricks.errors import Unprocessable
from bricks.products import CAL_EVENTS, L1_EVENTS
from bricks.tables import ColumnSpec, existing_columns, table_hdu
from bricks.wcs import (
    event_wcs_keywords,
    radec_to_standard,
    standard_to_radec,
    tangent_basis,
    vectors_to_radec,
    vectors_to_sky_pixels,
)

VERSION = "1.0.0"
CALDB = ("TELDEF",)
CHUNK_EVENTS = 1 << 14  # float64 temporaries of 128 kB: in cache, their memory reused


class CoordinatesConfig(BrickConfig):
    """The coordinates brick has no parameters: the geometry comes from the CALDB."""


def interpolate_attitude(
    attitude: fits.BinTableHDU, time: np.ndarray, ra_pnt: float, dec_pnt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointing (RA, Dec, ROLL) in degrees at ``time`` (mission s).

    Interpolated linearly in the tangent plane of the nominal pointing (RA_PNT, DEC_PNT)
    and, for the roll, on the unwrapped angle; clamped at the first and last rows.
    """
    t, xi, eta, roll = _attitude_track(attitude, ra_pnt, dec_pnt)
    ra, dec = standard_to_radec(np.interp(time, t, xi), np.interp(time, t, eta), ra_pnt, dec_pnt)
    return ra, dec, np.interp(time, t, roll)


def _attitude_track(
    attitude: fits.BinTableHDU, ra_pnt: float, dec_pnt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Attitude rows as (time, ξ, η about the nominal pointing, unwrapped roll)."""
    data = attitude.data
    if len(data) == 0:
        raise Unprocessable("ATTITUDE table has no rows: events cannot be placed", hdu="ATTITUDE")
    xi, eta = radec_to_standard(data["RA"], data["DEC"], ra_pnt, dec_pnt)
    if not (np.isfinite(xi).all() and np.isfinite(eta).all()):
        raise Unprocessable(
            "ATTITUDE points more than 90 deg away from RA_PNT/DEC_PNT", hdu="ATTITUDE"
        )
    roll = np.degrees(np.unwrap(np.radians(np.asarray(data["ROLL"], dtype=np.float64))))
    return np.asarray(data["TIME"], dtype=np.float64), xi, eta, roll


def detector_frames(
    attitude: fits.BinTableHDU, ra_pnt: float, dec_pnt: float, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """Per attitude row: times and the sky vectors (m, 3, 3) of the axis, +DETX and +DETY.

    The +DETX and +DETY vectors are scaled to one pixel in the tangent plane, so the
    gnomonic direction of a detector offset (dx, dy) is ``axis + dx · detx + dy · dety``.
    """
    t, xi, eta, roll = _attitude_track(attitude, ra_pnt, dec_pnt)
    ra, dec = standard_to_radec(xi, eta, ra_pnt, dec_pnt)
    pointing, east, north = np.moveaxis(tangent_basis(ra, dec), -2, 0)
    r = np.radians(roll)[:, None]
    scale = geometry.pixel_radians
    # +DETY at position angle ROLL, +DETX at ROLL − 90° (north through east)
    dety = scale * (np.cos(r) * north + np.sin(r) * east)
    detx = scale * (np.sin(r) * north - np.cos(r) * east)
    return t, np.stack([pointing, detx, dety], axis=1)


def _interpolation_weights(
    t: np.ndarray, time: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left and right row indices and the right row's weight, clamped at the ends."""
    left = np.clip(np.searchsorted(t, time, side="right") - 1, 0, t.size - 1)
    right = np.minimum(left + 1, t.size - 1)
    span = t[right] - t[left]
    weight = np.where(span > 0, (time - t[left]) / np.where(span > 0, span, 1.0), 0.0)
    return left, right, np.clip(weight, 0.0, 1.0)


def event_sky_positions(
    time: np.ndarray,
    detx: np.ndarray,
    dety: np.ndarray,
    attitude: fits.BinTableHDU,
    pointing: tuple[float, float],
    geometry: Geometry,
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """RA, DEC (deg) and sky X, Y (pixels) of events at detector positions DETX/DETY.

    ``out`` may give the arrays (e.g. table columns) to fill in place.

    The detector frame of each attitude row is interpolated linearly to the event time
    (rows 1 s apart differ by arcseconds, so the interpolation error is far below
    10⁻³ arcsec) and the event direction is formed as a vector, so the only
    trigonometry per event is the final RA/Dec.
    """
    ra_pnt, dec_pnt = pointing
    t, frames = detector_frames(attitude, ra_pnt, dec_pnt, geometry)
    n = time.size
    if out is None:
        out = {
            "RA": np.empty(n, dtype=np.float64),
            "DEC": np.empty(n, dtype=np.float64),
            "X": np.empty(n, dtype=np.float32),
            "Y": np.empty(n, dtype=np.float32),
        }
    for start in range(0, n, CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        left, right, weight = _interpolation_weights(t, np.asarray(time[part], np.float64))
        dx = np.asarray(detx[part], np.float64) - geometry.axis_x
        dy = np.asarray(dety[part], np.float64) - geometry.axis_y
        vector = []
        for k in range(3):
            # component k of axis + dx·detx + dy·dety at both rows, then interpolated
            axis, along_x, along_y = frames[:, 0, k], frames[:, 1, k], frames[:, 2, k]
            lo = axis[left] + dx * along_x[left] + dy * along_y[left]
            hi = axis[right] + dx * along_x[right] + dy * along_y[right]
            vector.append(lo + weight * (hi - lo))
        out["RA"][part], out["DEC"][part] = vectors_to_radec(*vector)
        out["X"][part], out["Y"][part] = vectors_to_sky_pixels(*vector, ra_pnt, dec_pnt)
    return out


POSITION_COLUMNS = (
    ("DETX", "1E", "pixel"),
    ("DETY", "1E", "pixel"),
    ("X", "1E", "pixel"),
    ("Y", "1E", "pixel"),
    ("RA", "1D", "deg"),
    ("DEC", "1D", "deg"),
)


def _l1_events_hdu(events: fits.BinTableHDU) -> fits.BinTableHDU:
    """The calibrated columns and headers plus empty position columns, to be filled in place.

    Filling the output table directly (rather than building the columns and copying
    them in) keeps one copy of the positions in memory: 10⁷ events need 0.3 GB less.
    """
    new_columns = [ColumnSpec(n, f, u) for n, f, u in POSITION_COLUMNS]
    hdu = table_hdu(existing_columns(events) + new_columns, len(events.data), "EVENTS")
    for card in events.header.cards:
        if card.keyword.startswith(("TLMIN", "TLMAX")):
            hdu.header[card.keyword] = card.value
    copy_header_keywords(events.header, hdu.header)
    names = hdu.columns.names
    for axis in ("DETX", "DETY"):
        n = names.index(axis) + 1
        hdu.header[f"TLMIN{n}"] = 0
        hdu.header[f"TLMAX{n}"] = 255
    header = hdu.header
    wcs = event_wcs_keywords(
        header["RA_PNT"], header["DEC_PNT"], names.index("X") + 1, names.index("Y") + 1
    )
    for key, value in wcs.items():
        header[key] = value
    header["HDUCLAS2"] = ("ALL", "every event, before screening")
    return hdu


def _run(inputs: dict[str, Any], calibration: dict[str, Any], config: CoordinatesConfig) -> dict:
    cal_events = inputs["cal_events"]
    geometry: Geometry = require_calibration(calibration, "TELDEF", "coordinates")
    header = cal_events[0].header
    missing = [k for k in ("RA_PNT", "DEC_PNT") if k not in header]
    if missing:
        raise Unprocessable(f"cal_events primary header lacks {missing}", keyword=missing[0])
    events = _l1_events_hdu(cal_events["EVENTS"])
    data = events.data
    # DET = RAW in this model; a teldef offset or rotation would be applied here
    data["DETX"] = data["RAWX"]
    data["DETY"] = data["RAWY"]
    event_sky_positions(
        data["TIME"],
        data["DETX"],
        data["DETY"],
        cal_events["ATTITUDE"],
        (float(header["RA_PNT"]), float(header["DEC_PNT"])),
        geometry,
        out={name: data[name] for name in ("RA", "DEC", "X", "Y")},
    )
    l1 = fits.HDUList(
        [
            primary_with_creator(cal_events[0], f"mxt-coordinates {VERSION}"),
            events,
            cal_events["HK"].copy(),
            cal_events["ATTITUDE"].copy(),
        ]
    )
    return {"l1_events": l1}


BRICK = Brick(
    name="coordinates",
    version=VERSION,
    inputs=(CAL_EVENTS,),
    outputs=(L1_EVENTS,),
    caldb=CALDB,
    config=CoordinatesConfig,
    run=_run,
)
