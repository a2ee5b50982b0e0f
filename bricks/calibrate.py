"""Calibrate brick: L0 events → calibrated events (PHA, PI, ENERGY, PATTERN, STATUS).

The model of Swift-XRT's xrtflagpix + xrtpcgrade + xrtcalcpi, with EPIC-pn patterns:

1. STATUS flags from the bad-pixel map and the transmitted window;
2. pedestal subtraction per pixel (each of the 3 × 3 pixels with its own column);
3. pixel energies with the gain at the CCD temperature interpolated from HK at the
   event time, corrected for the CTI loss of the event's row at the event time;
4. event threshold on the centre pixel, split threshold on the neighbours, PATTERN
   from the mask of neighbours above the split threshold (table below);
5. PHA (ADU, CTI-corrected sum of the pixels above the split threshold), ENERGY (eV)
   and PI = floor(ENERGY / 10 eV) in 0–1023.

Patterns (``dx`` along +RAWX, ``dy`` along +RAWY; "above" means ≥ split threshold):

=======  =====================================================================
pattern  neighbours above the split threshold
=======  =====================================================================
0        none (single)
1 2 3 4  exactly one side neighbour: (0,+1), (+1,0), (0,−1), (−1,0)
5 … 8    two side neighbours at a right angle, the corner between them below:
         5 (0,+1)+(+1,0), 6 (+1,0)+(0,−1), 7 (0,−1)+(−1,0), 8 (−1,0)+(0,+1)
9 … 12   the same two side neighbours and the corner between them (2 × 2 square):
         9 adds (+1,+1), 10 (+1,−1), 11 (−1,−1), 12 (−1,+1)
13       anything else, or a neighbour larger than the centre (invalid)
=======  =====================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits

from bricks.base import Brick, BrickConfig
from bricks.calibration import (
    BadPixels,
    Cti,
    EventGrades,
    Gain,
    Pedestal,
    require_calibration,
    with_neighbours,
)
from bricks.errors import Unprocessable
from bricks.l0 import DETECTOR_TLMAX, DETECTOR_TLMIN, RAW_MAX, RAW_MIN, validate_l0
from bricks.ogip import apply_cards, card
from bricks.products import CAL_EVENTS, L0
from bricks.tables import ColumnSpec, table_hdu

VERSION = "1.0.0"
CALDB = ("BADPIX", "PEDESTAL", "GAIN", "CTI", "GRADES")
CHUNK_EVENTS = 1 << 13  # (n, 9) temporaries of ~0.3 MB: in cache, their memory reused

STATUS_HOT_PIXEL = 1
STATUS_BAD_COLUMN = 2
STATUS_NEIGHBOUR_OF_BAD = 4
STATUS_OUTSIDE_WINDOW = 8
STATUS_INVALID_EVENT = 16
PATTERN_INVALID = 13
PI_MAX = 1023

# PHAS index of the neighbour at (dx, dy) is 3·(dy+1) + (dx+1); the centre (4) is left out
_NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
_UP, _RIGHT, _DOWN, _LEFT = 7, 5, 1, 3
_CORNERS = {(_UP, _RIGHT): 8, (_RIGHT, _DOWN): 2, (_DOWN, _LEFT): 0, (_LEFT, _UP): 6}


def _pattern_of_mask(above: frozenset[int]) -> int:
    """EPIC-pn pattern number of a set of PHAS indices above the split threshold."""
    sides = above & {_UP, _RIGHT, _DOWN, _LEFT}
    corners = above - sides
    if not above:
        return 0
    if len(above) == 1 and sides:
        return 1 + (_UP, _RIGHT, _DOWN, _LEFT).index(next(iter(sides)))
    for number, (pair, corner) in enumerate(_CORNERS.items()):
        if sides == set(pair):
            if not corners:
                return 5 + number
            if corners == {corner}:
                return 9 + number
    return PATTERN_INVALID


def _pattern_table() -> np.ndarray:
    """Pattern number of each of the 256 masks of the 8 neighbours (bit i = _NEIGHBOURS[i])."""
    table = np.empty(256, dtype=np.int16)
    for code in range(256):
        above = frozenset(_NEIGHBOURS[bit] for bit in range(8) if code >> bit & 1)
        table[code] = _pattern_of_mask(above)
    return table


PATTERN_TABLE = _pattern_table()


class CalibrateConfig(BrickConfig):
    """The calibrate brick has no parameters: everything comes from the CALDB."""


def status_image(badpix: BadPixels, npix: int = 256) -> np.ndarray:
    """STATUS bits per detector pixel ``[rawy, rawx]``: hot, bad column, neighbour of bad."""
    image = np.zeros((npix, npix), dtype=np.int16)
    hot_x, hot_y = badpix.hot_pixels
    hot = np.zeros((npix, npix), dtype=bool)
    hot[hot_y, hot_x] = True
    column = np.zeros((npix, npix), dtype=bool)
    column[:, badpix.bad_columns] = True
    bad = hot | column
    near = with_neighbours(bad)
    image[hot] |= STATUS_HOT_PIXEL
    image[column] |= STATUS_BAD_COLUMN
    image[near & ~bad] |= STATUS_NEIGHBOUR_OF_BAD
    return image


def classify_patterns(pixel_ev: np.ndarray, split_ev: float) -> np.ndarray:
    """PATTERN (n,) of 3 × 3 pixel energies ``pixel_ev`` (n, 9), eV.

    One pass per neighbour column builds the 8-bit mask code and the "neighbour above
    the centre" test together (no (n, 8) copies, no reductions along the short axis).
    """
    centre = pixel_ev[:, 4]
    code = np.zeros(len(pixel_ev), dtype=np.uint8)
    not_maximum = np.zeros(len(pixel_ev), dtype=bool)
    for bit, index in enumerate(_NEIGHBOURS):
        neighbour = pixel_ev[:, index]
        code |= np.left_shift((neighbour >= split_ev).view(np.uint8), np.uint8(bit))
        not_maximum |= neighbour > centre
    pattern = PATTERN_TABLE[code]
    pattern[not_maximum] = PATTERN_INVALID
    return pattern


def _row_sums(values: np.ndarray) -> np.ndarray:
    """Sum of each row of ``values`` (n, 9), in the order of ``values.sum(axis=1)``.

    numpy adds a row of 9 as eight partial sums paired as ((0+1)+(2+3))+((4+5)+(6+7)),
    then the ninth; the same additions made column-wise cost a third of the reduction
    along the short axis, with identical results.
    """
    c = [values[:, i] for i in range(9)]
    return ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7])) + c[8]


def _pedestal_by_pixel(pedestal: Pedestal) -> np.ndarray:
    """Pedestal of the 9 PHAS pixels (n_columns, 9) for each centre column."""
    npix = pedestal.adu.size
    columns = np.clip(np.arange(npix)[:, None] + np.tile(np.arange(-1, 2), 3), 0, npix - 1)
    return pedestal.adu[columns].astype(np.float32)


def _hk_temperatures(hk: fits.BinTableHDU) -> tuple[np.ndarray, np.ndarray]:
    """HK times (s) and CCD temperatures (°C), to interpolate at the event times."""
    data = hk.data
    if len(data) == 0:
        raise Unprocessable("L0 HK table has no rows: no CCD temperature for the events", hdu="HK")
    return np.asarray(data["TIME"], dtype=np.float64), data["CCD_TEMP"].astype(np.float64)


def calibrate_events(events: fits.BinTableHDU, hk: fits.BinTableHDU, cal: dict) -> dict:
    """Calibrated columns (PHA, PI, ENERGY, PATTERN, STATUS) of the L0 events.

    Parameters
    ----------
    events, hk
        L0 EVENTS and HK tables (not modified).
    cal
        BADPIX, PEDESTAL, GAIN, CTI and GRADES calibration objects by codename.
    """
    grades: EventGrades = cal["GRADES"]
    gain: Gain = cal["GAIN"]
    cti: Cti = cal["CTI"]
    data = events.data
    n = len(data)
    all_time, all_rawx, all_rawy = data["TIME"], data["RAWX"], data["RAWY"]
    phas = np.asarray(data["PHAS"])
    hk_time, hk_temp = _hk_temperatures(hk) if n else (None, None)
    pedestal9 = _pedestal_by_pixel(cal["PEDESTAL"])
    badpix_status = status_image(cal["BADPIX"])
    pha = np.empty(n, dtype=np.int32)
    pi = np.empty(n, dtype=np.int32)
    energy = np.empty(n, dtype=np.float32)
    pattern = np.empty(n, dtype=np.int16)
    status = np.empty(n, dtype=np.int16)
    # every step is per event: chunks keep the temporaries in cache and reuse their memory
    for start in range(0, n, CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        time = np.asarray(all_time[part], dtype=np.float64)
        rawx = np.asarray(all_rawx[part], dtype=np.int16)
        rawy = np.asarray(all_rawy[part], dtype=np.int16)
        # the charge left after RAWY + 1 transfers, and eV per ADU at the event's temperature
        transfer = cti.transfer_factor(time, rawy)
        ev_per_adu = gain.ev_per_adu(np.interp(time, hk_time, hk_temp))
        scale = ev_per_adu / transfer  # eV per raw ADU, CTI-corrected
        column = np.clip(rawx, DETECTOR_TLMIN, DETECTOR_TLMAX)
        adu = np.subtract(phas[part], pedestal9[column], dtype=np.float32)
        pixel_ev = adu * scale[:, None].astype(np.float32)
        above = pixel_ev >= grades.split_threshold_ev
        adu_sum = _row_sums((adu * above).astype(np.float64))
        part_energy = (adu_sum * scale).astype(np.float32)
        energy[part] = part_energy
        pha[part] = np.rint(adu_sum / transfer)
        pi[part] = np.clip(np.floor(part_energy / 10.0), 0, PI_MAX)
        part_pattern = classify_patterns(pixel_ev, grades.split_threshold_ev)
        pattern[part] = part_pattern
        centre_ok = pixel_ev[:, 4] >= grades.event_threshold_ev
        flags = badpix_status[np.clip(rawy, DETECTOR_TLMIN, DETECTOR_TLMAX), column]
        outside = (rawx < RAW_MIN) | (rawx > RAW_MAX) | (rawy < RAW_MIN) | (rawy > RAW_MAX)
        flags |= np.where(outside, STATUS_OUTSIDE_WINDOW, 0).astype(np.int16)
        invalid = (part_pattern > grades.max_valid_pattern) | ~centre_ok
        flags |= np.where(invalid, STATUS_INVALID_EVENT, 0).astype(np.int16)
        status[part] = flags
    return {"PHA": pha, "PI": pi, "ENERGY": energy, "PATTERN": pattern, "STATUS": status}


def _events_hdu(
    events: fits.BinTableHDU, primary: fits.Header, calibrated: dict[str, np.ndarray]
) -> fits.BinTableHDU:
    data = events.data
    columns = [
        ColumnSpec(name, tform, unit, calibrated[name] if name in calibrated else data[name])
        for name, tform, unit in _EVENTS_LAYOUT
    ]
    hdu = table_hdu(columns, len(data), "EVENTS")
    copy_header_keywords(events.header, hdu.header)
    # the observation keywords (pointing, object, trigger) travel with the events from here on
    copy_header_keywords(primary, hdu.header)
    apply_cards(hdu.header, _EVENTS_CARDS)
    hdu.header["SPLITTHR"] = (float(calibrated["split_ev"]), "[eV] split threshold")
    hdu.header["EVENTTHR"] = (float(calibrated["event_ev"]), "[eV] event threshold")
    return hdu


#: The calibrated EVENTS columns (name, TFORM, unit): the L0 ones, then the calibration's.
_EVENTS_LAYOUT = (
    ("TIME", "1D", "s"),
    ("FRAME", "1J", None),
    ("RAWX", "1I", "pixel"),
    ("RAWY", "1I", "pixel"),
    ("PHAS", "9I", "adu"),
    ("PHA", "1J", "adu"),
    ("PI", "1J", "chan"),
    ("ENERGY", "1E", "eV"),
    ("PATTERN", "1I", None),
    ("STATUS", "1I", None),
)
_EVENTS_COLUMNS = tuple(name for name, _, _ in _EVENTS_LAYOUT)
_LIMITS = {
    "RAWX": (DETECTOR_TLMIN, DETECTOR_TLMAX),
    "RAWY": (DETECTOR_TLMIN, DETECTOR_TLMAX),
    "PI": (0, PI_MAX),
    "PATTERN": (0, PATTERN_INVALID),
}
#: The calibrated EVENTS header's constant cards (column limits, classes), made once.
_EVENTS_CARDS = tuple(
    [
        item
        for name, (low, high) in _LIMITS.items()
        for item in (
            card(f"TLMIN{_EVENTS_COLUMNS.index(name) + 1}", low),
            card(f"TLMAX{_EVENTS_COLUMNS.index(name) + 1}", high),
        )
    ]
    + [
        card("HDUCLASS", "OGIP", "format conforms to OGIP standards"),
        card("HDUCLAS1", "EVENTS", "event list"),
        card("HDUCLAS2", "ALL", "every event, before screening"),
        card("CHANTYPE", "PI", "PI: 10 eV channels"),
        card("GAINAPP", True, "temperature-dependent gain applied"),
        card("CTIAPP", True, "CTI correction applied"),
    ]
)


def copy_header_keywords(source: fits.Header, target: fits.Header) -> None:
    """Copy the non-structural keywords of ``source`` onto ``target`` (a new header)."""
    for item in source.cards:
        key = item.keyword
        if key in ("", "COMMENT", "HISTORY") or key in target or _structural(key):
            continue
        target[key] = (item.value, item.comment)


_STRUCTURAL_KEYWORDS = frozenset(
    ("SIMPLE", "EXTEND", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT")
    + ("TFIELDS", "EXTNAME", "CREATOR")
)
_STRUCTURAL = ("TTYPE", "TFORM", "TUNIT", "TLMIN", "TLMAX", "TDIM", "TNULL", "TSCAL", "TZERO")


def _structural(key: str) -> bool:
    return key in _STRUCTURAL_KEYWORDS or key.startswith(_STRUCTURAL)


def primary_with_creator(source: fits.PrimaryHDU, creator: str) -> fits.PrimaryHDU:
    """A copy of the L0 primary HDU whose CREATOR names the brick that wrote the file."""
    primary = fits.PrimaryHDU(header=source.header.copy())
    primary.header["CREATOR"] = (creator, "brick and version that wrote the file")
    return primary


def _run(inputs: dict[str, Any], calibration: dict[str, Any], config: CalibrateConfig) -> dict:
    l0 = inputs["l0"]
    validate_l0(l0)
    cal = {codename: require_calibration(calibration, codename, "calibrate") for codename in CALDB}
    calibrated = calibrate_events(l0["EVENTS"], l0["HK"], cal)
    calibrated["split_ev"] = cal["GRADES"].split_threshold_ev
    calibrated["event_ev"] = cal["GRADES"].event_threshold_ev
    cal_events = fits.HDUList(
        [
            primary_with_creator(l0[0], f"mxt-calibrate {VERSION}"),
            _events_hdu(l0["EVENTS"], l0[0].header, calibrated),
            l0["HK"].copy(),
            l0["ATTITUDE"].copy(),
        ]
    )
    return {"cal_events": cal_events}


BRICK = Brick(
    name="calibrate",
    version=VERSION,
    inputs=(L0,),
    outputs=(CAL_EVENTS,),
    caldb=CALDB,
    config=CalibrateConfig,
    run=_run,
)
