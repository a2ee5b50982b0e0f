"""Screen brick: L1 events → L2 events (good events inside good time intervals).

The model of Swift-XRT's xrtscreen:

1. GTIs from housekeeping: no SAA and Earth elevation ELV > elv_min. Each HK (and
   attitude) row holds from its time until the next row's (sample and hold); the last
   row holds for one median row spacing;
2. GTIs from the attitude: the pointing within ``pointing_tolerance_arcmin`` of the
   nominal RA_PNT/DEC_PNT;
3. both intersected with TSTART–TSTOP and merged;
4. event cuts: PATTERN ≤ pattern_max, STATUS = 0, pi_min ≤ PI ≤ pi_max, time in a GTI;
5. background-flare refinement: the whole-field rate of the surviving events in bins
   of ``flare_bin_s``; a bin whose counts exceed the running median (over
   ``flare_window_bins`` bins, so a decaying afterglow is not taken for a flare) by more
   than ``flare_sigma`` Poisson standard deviations is removed from the GTIs;
6. ONTIME (sum of the GTIs), LIVETIME = ONTIME × DEADC, EXPOSURE = LIVETIME.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import Field

from bricks.base import Brick, BrickConfig
from bricks.calibrate import primary_with_creator
from bricks.calibration import Selection, require_calibration
from bricks.ogip import gti_hdu
from bricks.products import L1_EVENTS, L2_EVENTS
from bricks.tables import select_rows
from bricks.wcs import radec_to_standard

VERSION = "1.0.0"
CALDB = ("SELECT",)
DEADC = 1.0
CHUNK_EVENTS = 1 << 20  # frame-store pnCCD: no dead time in this model


class ScreenConfig(BrickConfig):
    """Parameters of the screen brick (the criteria themselves are the SELECT CALDB)."""

    flare_filter: bool = Field(True, description="refine the GTIs by removing flare bins")
    flare_bin_s: float = Field(10.0, gt=0.0, description="flare-search bin, s")
    flare_window_bins: int = Field(31, ge=3, description="running-median window, bins (odd)")


# ------------------------------------------------------------------------ intervals


def intervals_from_samples(time: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Intervals (n, 2) where sampled ``good`` holds; each sample lasts until the next.

    Parameters
    ----------
    time
        Strictly increasing sample times, s.
    good
        Boolean per sample.
    """
    if time.size == 0:
        return np.empty((0, 2))
    step = float(np.median(np.diff(time))) if time.size > 1 else 1.0
    edges = np.append(time, time[-1] + step)
    flag = np.concatenate([[False], good.astype(bool), [False]])
    change = np.flatnonzero(np.diff(flag.astype(np.int8)))
    starts, stops = change[0::2], change[1::2]
    return np.column_stack([edges[starts], edges[stops]])


def intersect_intervals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of two sorted, disjoint interval lists (n, 2)."""
    if len(a) == 0 or len(b) == 0:
        return np.empty((0, 2))
    start = np.maximum(a[:, None, 0], b[None, :, 0])
    stop = np.minimum(a[:, None, 1], b[None, :, 1])
    keep = stop > start
    pieces = np.column_stack([start[keep], stop[keep]])
    return merge_intervals(pieces)


def merge_intervals(intervals: np.ndarray) -> np.ndarray:
    """Sorted union of intervals (n, 2): overlapping or touching intervals merged."""
    if len(intervals) == 0:
        return np.empty((0, 2))
    ordered = intervals[np.argsort(intervals[:, 0])]
    reach = np.maximum.accumulate(ordered[:, 1])
    new = np.concatenate([[True], ordered[1:, 0] > reach[:-1]])
    starts = ordered[new, 0]
    stops = np.maximum.reduceat(ordered[:, 1], np.flatnonzero(new))
    return np.column_stack([starts, stops])


def in_intervals(time: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """True where ``time`` falls inside one of the sorted, disjoint ``intervals`` [start, stop)."""
    edges = np.asarray(intervals, dtype=np.float64).ravel()  # start0, stop0, start1, …
    inside = np.empty(time.shape, dtype=bool)
    for start in range(0, time.size, CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        # after an odd number of edges a time is inside an interval
        inside[part] = np.searchsorted(edges, time[part], side="right") % 2 == 1
    return inside


# --------------------------------------------------------------------- GTI criteria


def housekeeping_gti(hk: fits.BinTableHDU, selection: Selection) -> np.ndarray:
    """Intervals outside the SAA with Earth elevation above ``elv_min_deg``."""
    data = hk.data
    good = ~np.asarray(data["SAA"], dtype=bool) & (data["ELV"] > selection.elv_min_deg)
    return intervals_from_samples(np.asarray(data["TIME"], dtype=np.float64), good)


def attitude_gti(
    attitude: fits.BinTableHDU, ra_pnt: float, dec_pnt: float, selection: Selection
) -> np.ndarray:
    """Intervals with the pointing within ``pointing_tolerance_arcmin`` of the nominal."""
    data = attitude.data
    xi, eta = radec_to_standard(data["RA"], data["DEC"], ra_pnt, dec_pnt)
    offset_arcmin = np.degrees(np.arctan(np.hypot(xi, eta))) * 60.0
    good = np.nan_to_num(offset_arcmin, nan=np.inf) <= selection.pointing_tolerance_arcmin
    return intervals_from_samples(np.asarray(data["TIME"], dtype=np.float64), good)


def flare_intervals(
    time: np.ndarray, gti: np.ndarray, config: ScreenConfig, flare_sigma: float
) -> np.ndarray:
    """Bins (n, 2) whose whole-field counts exceed the running median by > ``flare_sigma``."""
    if len(gti) == 0 or time.size == 0:
        return np.empty((0, 2))
    width = config.flare_bin_s
    t0 = gti[0, 0]
    nbins = int(np.ceil((gti[-1, 1] - t0) / width))
    edges = t0 + width * np.arange(nbins + 1)
    counts = np.bincount(((time - t0) // width).astype(np.int64), minlength=nbins)[:nbins]
    live = _bin_exposure(edges, gti)
    full = live > 0.5 * width  # bins mostly inside the GTIs carry a usable rate
    if full.sum() < 3:
        return np.empty((0, 2))
    rate = np.where(full, counts / np.maximum(live, 1e-9), np.nan)
    window = config.flare_window_bins | 1
    filled = np.interp(np.arange(nbins), np.flatnonzero(full), rate[full])
    baseline = running_median(filled, window)
    expected = baseline * live
    flaring = full & (counts > expected + flare_sigma * np.sqrt(np.maximum(expected, 1.0)))
    return np.column_stack([edges[:-1][flaring], edges[1:][flaring]])


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median over ``window`` (odd) neighbouring values, the ends padded with the edge values."""
    half = window // 2
    padded = np.pad(values, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def _bin_exposure(edges: np.ndarray, gti: np.ndarray) -> np.ndarray:
    """Time (s) of each bin covered by the GTIs."""
    covered = np.zeros(edges.size - 1)
    for start, stop in gti:  # a handful of GTIs, not events
        covered += np.clip(np.minimum(edges[1:], stop) - np.maximum(edges[:-1], start), 0, None)
    return covered


def subtract_intervals(gti: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``gti`` with the ``bad`` intervals removed."""
    if len(bad) == 0 or len(gti) == 0:
        return gti
    bad = merge_intervals(bad)
    lo = gti[:, 0].min()
    hi = gti[:, 1].max()
    complement = np.column_stack(
        [np.concatenate([[lo], bad[:, 1]]), np.concatenate([bad[:, 0], [hi]])]
    )
    complement = complement[complement[:, 1] > complement[:, 0]]
    return intersect_intervals(gti, complement)


# -------------------------------------------------------------------------- screening


def good_time_intervals(l1: fits.HDUList, selection: Selection) -> np.ndarray:
    """GTIs from housekeeping and attitude, within TSTART–TSTOP."""
    header = l1["EVENTS"].header
    span = np.array([[float(header["TSTART"]), float(header["TSTOP"])]])
    gti = intersect_intervals(housekeeping_gti(l1["HK"], selection), span)
    pointing = attitude_gti(l1["ATTITUDE"], header["RA_PNT"], header["DEC_PNT"], selection)
    return intersect_intervals(gti, pointing)


def event_mask(data: fits.FITS_rec, selection: Selection) -> np.ndarray:
    """Events with a valid pattern, no STATUS flag and PI in the selected range."""
    pi = data["PI"]
    return (
        (data["PATTERN"] <= selection.pattern_max)
        & (data["STATUS"] == 0)
        & (pi >= selection.pi_min)
        & (pi <= selection.pi_max)
    )


def screen_events(
    l1: fits.HDUList, selection: Selection, config: ScreenConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mask of the events kept, the final GTIs (n, 2) and the number of flare bins cut."""
    data = l1["EVENTS"].data
    time = np.asarray(data["TIME"], dtype=np.float64)
    gti = good_time_intervals(l1, selection)
    good = event_mask(data, selection) & in_intervals(time, gti)
    n_flares = 0
    if config.flare_filter:
        flares = flare_intervals(time[good], gti, config, selection.flare_sigma)
        n_flares = len(flares)
        if n_flares:
            gti = subtract_intervals(gti, flares)
            good &= in_intervals(time, gti)
    return good, gti, n_flares


def _exposure_cards(gti: np.ndarray) -> dict[str, tuple[float, str]]:
    ontime = float(np.sum(gti[:, 1] - gti[:, 0])) if len(gti) else 0.0
    return {
        "ONTIME": (ontime, "[s] sum of the good time intervals"),
        "LIVETIME": (ontime * DEADC, "[s] ONTIME corrected for dead time"),
        "EXPOSURE": (ontime * DEADC, "[s] exposure time"),
        "DEADC": (DEADC, "dead time correction"),
    }


def _run(inputs: dict[str, Any], calibration: dict[str, Any], config: ScreenConfig) -> dict:
    l1 = inputs["l1_events"]
    selection: Selection = require_calibration(calibration, "SELECT", "screen")
    kept, gti, n_flares = screen_events(l1, selection, config)
    events = l1["EVENTS"]
    screened = select_rows(events, kept)
    cards = _exposure_cards(gti)
    for key, value in cards.items():
        screened.header[key] = value
    screened.header["HDUCLAS2"] = ("ACCEPTED", "screened events")
    screened.header["NFLARES"] = (n_flares, "flare bins removed from the GTIs")
    gti_ext = gti_hdu(gti.reshape(-1, 2), screened.header)
    for key, value in cards.items():
        gti_ext.header[key] = value
    l2 = fits.HDUList(
        [
            primary_with_creator(l1[0], f"mxt-screen {VERSION}"),
            screened,
            gti_ext,
            l1["HK"].copy(),
            l1["ATTITUDE"].copy(),
        ]
    )
    return {"l2_events": l2}


BRICK = Brick(
    name="screen",
    version=VERSION,
    inputs=(L1_EVENTS,),
    outputs=(L2_EVENTS,),
    caldb=CALDB,
    config=ScreenConfig,
    run=_run,
)
