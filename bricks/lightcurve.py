"""Light curve brick: exposure-corrected, background-subtracted source rates and decay index.

Modelled on Swift-XRT's ``xrtproducts`` and the OGIP/93-003 RATE format. Source and
background events come from the regions of :mod:`bricks.regions`; bins are either of
fixed width or hold a minimum number of source counts (the usual choice for GRB
afterglows), never span two good time intervals, and carry their fractional exposure.
Rates are corrected for the PSF fraction left after background subtraction and for
the vignetting at the source's off-axis angle, so they estimate the whole source
count rate an on-axis, infinite aperture would see.

The decay ``rate = norm * (t - t0) ** -alpha`` (``t0`` = TRIGTIME, else TSTART) is fitted
by Poisson likelihood on the binned source and background counts (XSPEC's W statistic:
the background level of each bin profiled out), the model integrated exactly over
each bin. ``alpha_err`` is the 1-sigma error from the
curvature of the likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from pydantic import Field
from scipy import optimize

from bricks.base import Brick
from bricks.errors import BadInput
from bricks.fitting import WStat, curvature_errors
from bricks.ogip import apply_cards, card, gti_hdu, observation_cards, primary_hdu
from bricks.products import L2_EVENTS, LIGHTCURVE, LIGHTCURVE_FIT, POSITION
from bricks.regions import (
    ExtractionRegions,
    RegionConfig,
    build_regions,
    dead_time_correction,
    events_table,
    extraction_status,
    good_time_intervals,
    live_exposure,
    require_columns,
)
from bricks.tables import column_template, filled_table

VERSION = "1.0.0"
#: Most bins a fixed-width light curve may have (guards against a tiny bin width).
MAX_BINS = 1_000_000
#: Most groups the decay fit evaluates (adjacent bins are summed beyond; exact).
MAX_FIT_GROUPS = 2000


class LightcurveConfig(RegionConfig):
    """Light curve parameters.

    Parameters
    ----------
    binning
        ``"counts"``: at least ``min_counts`` source counts per bin within each GTI;
        ``"fixed"``: bins of ``bin_s`` seconds.
    min_counts
        Source counts per bin for ``"counts"`` binning.
    bin_s
        Bin width for ``"fixed"`` binning, s.
    min_fracexp
        Fixed bins with a smaller fractional exposure are dropped.
    errors
        ``"gehrels"`` (1-sigma upper, 1 + sqrt(N + 0.75), right for few counts) or
        ``"sqrt"`` (sqrt(N)).
    pi_min, pi_max
        PI channel range (10 eV channels) of the events used.
    """

    binning: Literal["counts", "fixed"] = "counts"
    min_counts: int = Field(20, ge=1, le=100_000)
    bin_s: float = Field(100.0, gt=0.0)
    min_fracexp: float = Field(0.1, ge=0.0, le=1.0)
    errors: Literal["gehrels", "sqrt"] = "gehrels"
    pi_min: int = Field(20, ge=0, le=1023)
    pi_max: int = Field(1000, ge=0, le=1023)


@dataclass(frozen=True)
class Bins:
    """Time bins with their counts; times in mission seconds, exposure in s."""

    start: np.ndarray
    stop: np.ndarray
    src_counts: np.ndarray
    bkg_counts: np.ndarray
    gti_time: np.ndarray  # time inside GTIs per bin, s


def gti_time_before(intervals: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Total good time before each of ``times``, s (intervals sorted, disjoint)."""
    if len(intervals) == 0:
        return np.zeros_like(times, dtype=np.float64)
    knots = intervals.ravel()
    cumulative = np.concatenate([[0.0], np.cumsum(intervals[:, 1] - intervals[:, 0])])
    # At each START the good time so far is constant, at each STOP it has grown.
    values = np.repeat(cumulative, 2)[1:-1]
    return np.interp(times, knots, values)


def _count_in_bins(times: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    index = np.searchsorted(start, times, side="right") - 1
    inside = (index >= 0) & (times < stop[np.clip(index, 0, None)])
    return np.bincount(index[inside], minlength=len(start))


def fixed_bins(
    src_times: np.ndarray, bkg_times: np.ndarray, intervals: np.ndarray, config: LightcurveConfig
) -> Bins:
    """Bins of ``config.bin_s`` seconds from the first GTI start to the last GTI stop."""
    first, last = intervals[0, 0], intervals[-1, 1]
    n_bins = math.ceil((last - first) / config.bin_s)
    if n_bins > MAX_BINS:
        raise BadInput(
            f"bin_s={config.bin_s} s gives {n_bins} bins over {last - first:.0f} s "
            f"(at most {MAX_BINS})"
        )
    edges = first + config.bin_s * np.arange(n_bins + 1)
    edges[-1] = max(edges[-1], last)
    start, stop = edges[:-1], edges[1:]
    good = gti_time_before(intervals, stop) - gti_time_before(intervals, start)
    keep = good >= config.min_fracexp * (stop - start)
    keep &= good > 0
    src = _count_in_bins(src_times, start, stop)[keep]
    bkg = _count_in_bins(bkg_times, start, stop)[keep]
    return Bins(start[keep], stop[keep], src, bkg, good[keep])


def counts_bins(
    src_times: np.ndarray, bkg_times: np.ndarray, intervals: np.ndarray, min_counts: int
) -> Bins:
    """Bins of at least ``min_counts`` source counts, each inside one GTI.

    A GTI's trailing remainder joins its last full bin; a GTI with fewer than
    ``min_counts`` counts is one bin. Events of one frame share their TIME and are never
    split between bins: a bin that would open inside a frame opens after it (so the
    bin before it gains the frame's events, the one after may hold fewer than
    ``min_counts``, and a frame with more than ``min_counts`` events is one bin).
    """
    gti_start, gti_stop = intervals[:, 0], intervals[:, 1]
    gti_index = np.searchsorted(gti_start, src_times, side="right") - 1
    inside = (gti_index >= 0) & (src_times < gti_stop[np.clip(gti_index, 0, None)])
    times, gti_index = src_times[inside], gti_index[inside]
    per_gti = np.bincount(gti_index, minlength=len(intervals))
    first_event = np.concatenate([[0], np.cumsum(per_gti)[:-1]])
    bins_per_gti = np.maximum(per_gti // min_counts, 1)
    first_bin = np.concatenate([[0], np.cumsum(bins_per_gti)[:-1]])
    bin_gti = np.repeat(np.arange(len(intervals)), bins_per_gti)
    local = np.arange(bin_gti.size) - first_bin[bin_gti]
    opening_event = first_event[bin_gti] + local * min_counts
    if times.size:
        frame_time = times[np.clip(opening_event, 0, times.size - 1)]
        after = np.searchsorted(times, frame_time, side="right")
        opening_time = np.where(
            after < times.size, times[np.minimum(after, times.size - 1)], np.inf
        )
    else:
        opening_time = gti_start[bin_gti]
    start = np.where(local == 0, gti_start[bin_gti], opening_time)
    previous = np.concatenate([[-np.inf], start[:-1]])
    keep = (local == 0) | ((start < gti_stop[bin_gti]) & (start > previous))
    start, bin_gti = start[keep], bin_gti[keep]
    last_of_gti = np.append(bin_gti[1:] != bin_gti[:-1], True)
    stop = np.where(last_of_gti, gti_stop[bin_gti], np.append(start[1:], 0.0))
    src = _count_in_bins(times, start, stop)
    bkg = _count_in_bins(bkg_times, start, stop)
    return Bins(start, stop, src, bkg, stop - start)


def poisson_sigma(counts: np.ndarray, errors: str) -> np.ndarray:
    """1-sigma error of Poisson counts: Gehrels' upper limit or sqrt(N)."""
    counts = counts.astype(np.float64)
    return 1.0 + np.sqrt(counts + 0.75) if errors == "gehrels" else np.sqrt(counts)


def power_law_integral(lo: np.ndarray, hi: np.ndarray, alpha: float) -> np.ndarray:
    """Integral of ``u ** -alpha`` from ``lo`` to ``hi`` (both > 0), s."""
    if abs(1.0 - alpha) < 1e-9:
        return np.log(hi / lo)
    return (hi ** (1.0 - alpha) - lo ** (1.0 - alpha)) / (1.0 - alpha)


def _decay_wstat(
    params: np.ndarray, lo: np.ndarray, hi: np.ndarray, live: np.ndarray, statistic: WStat
) -> float:
    log_norm, alpha = params
    source = 10.0**log_norm * live * power_law_integral(lo, hi, alpha)
    return statistic(source)


def empty_fit(t0: float, n_bins: int, status: str) -> dict[str, Any]:
    """The decay fit product when there is nothing to fit, saying why in ``status``."""
    return {
        "alpha": None,
        "alpha_err": None,
        "norm": None,
        "t0": float(t0),
        "statistic": "wstat",
        "wstat": None,
        "chi2": None,
        "dof": max(n_bins - 2, 0),
        "n_bins": n_bins,
        "n_groups": n_bins,
        "status": status,
    }


def merge_contiguous(
    lo: np.ndarray,
    hi: np.ndarray,
    live: np.ndarray,
    counts: np.ndarray,
    bkg_counts: np.ndarray,
    max_groups: int,
) -> tuple[np.ndarray, ...]:
    """Runs of adjacent bins with the same live fraction summed into at most ~``max_groups``.

    Exact for the decay fit: summed Poisson counts are Poisson, and the model integral
    over a run of adjacent bins of one live fraction is the integral over its span.
    """
    n = lo.size
    chunk = -(-n // max_groups)
    adjacent = np.isclose(lo[1:], hi[:-1], rtol=0.0, atol=1e-6) & np.isclose(
        live[1:], live[:-1], rtol=1e-9
    )
    opens = np.concatenate([[True], ~adjacent | (np.arange(1, n) % chunk == 0)])
    group = np.cumsum(opens) - 1
    closes = np.append(opens[1:], True)
    return (
        lo[opens],
        hi[closes],
        live[opens],
        np.bincount(group, counts),
        np.bincount(group, bkg_counts),
    )


def fit_decay(
    bins: Bins,
    live_fraction: np.ndarray,
    area_ratio: float,
    response: float,
    t0: float,
    max_groups: int = MAX_FIT_GROUPS,
) -> dict[str, Any]:
    """Fit ``rate = norm * (t - t0) ** -alpha`` to the binned counts by W statistic.

    Parameters
    ----------
    bins
        The light curve bins.
    live_fraction
        Fraction of each bin that is good, live time.
    area_ratio
        Source over background region area.
    response
        Fraction of the source rate seen in the source region after background
        subtraction (effective PSF fraction times vignetting).
    t0
        Reference time, mission seconds.
    max_groups
        Above this many bins, adjacent bins are summed for the fit
        (:func:`merge_contiguous`: exact, and it bounds the fit's cost).

    Returns
    -------
    dict
        ``alpha``, ``alpha_err``, ``norm`` (corrected counts/s at t - t0 = 1 s),
        ``t0``, ``statistic`` ("wstat"), ``wstat`` (W at the best fit, XSPEC's Cash
        statistic with the background profiled), ``chi2`` (Pearson, against the best
        model), ``dof`` (fitted groups - 2), ``n_bins`` (light curve bins used),
        ``n_groups`` (groups fitted), ``status``.
    """
    usable = (bins.start > t0) & (live_fraction > 0)
    n = int(np.count_nonzero(usable))
    result = empty_fit(t0, n, "too_few_bins")
    if n < 3 or bins.src_counts[usable].sum() < 5:
        return result
    lo, hi = bins.start[usable] - t0, bins.stop[usable] - t0
    counts = bins.src_counts[usable].astype(np.float64)
    bkg_counts = bins.bkg_counts[usable].astype(np.float64)
    live = live_fraction[usable] * response
    if n > max_groups:
        lo, hi, live, counts, bkg_counts = merge_contiguous(
            lo, hi, live, counts, bkg_counts, max_groups
        )
    # the counts are fixed during the fit: W's count-only terms are computed once
    args = (lo, hi, live, WStat(counts, bkg_counts, area_ratio))
    start = _initial_guess(lo, hi, live, counts, area_ratio * bkg_counts)
    newton = _newton_decay(start, *args)
    if newton is not None:
        best_x, best_w, success = newton[0], newton[1], True
    else:  # no Newton convergence (alpha at 1, a non-convex start): the simplex
        best = optimize.minimize(
            _decay_wstat,
            start,
            args=args,
            method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 4000},
        )
        best_x, best_w, success = best.x, best.fun, bool(best.success)
    errors = curvature_errors(lambda p: _decay_wstat(p, *args), best_x)
    log_norm, alpha = best_x
    model = 10.0**log_norm * live * power_law_integral(lo, hi, alpha) + area_ratio * bkg_counts
    chi2 = float(np.sum((counts - model) ** 2 / np.maximum(model, 1e-12)))
    return {
        **result,
        "alpha": float(alpha),
        "alpha_err": errors[1],
        "norm": float(10.0**log_norm),
        "wstat": float(best_w),
        "chi2": chi2,
        "dof": max(counts.size - 2, 0),
        "n_groups": int(counts.size),
        "status": "ok" if success and errors[1] is not None else "fit_failed",
    }


#: Newton stops when its full step would move (log10 norm, alpha) by less than this.
NEWTON_STEP = 1e-10
NEWTON_MAX_ITERATIONS = 60
_LN10 = math.log(10.0)


def _newton_decay(
    start: np.ndarray, lo: np.ndarray, hi: np.ndarray, live: np.ndarray, statistic: WStat
) -> tuple[np.ndarray, float] | None:
    """Minimum of W over (log10 norm, alpha) by Newton's method, or None.

    The gradient and Hessian are analytic: W's derivatives with respect to each
    bin's source counts (:meth:`WStat.derivatives`) times those of the counts
    ``norm * live * integral(lo, hi, alpha)`` with respect to the parameters. Each step
    is halved until W does not increase; a Hessian that is not positive definite
    takes a gradient step instead. None when alpha comes within 1e-3 of 1 (the
    integral's closed form is then ill-conditioned), W is not finite, no step lowers
    W while the expected decrease is not negligible, or the iterations run out: the
    caller then uses the simplex.
    """
    params = np.asarray(start, dtype=np.float64).copy()
    value = _decay_wstat(params, lo, hi, live, statistic)
    log_lo, log_hi = np.log(lo), np.log(hi)
    for _ in range(NEWTON_MAX_ITERATIONS):
        if not math.isfinite(value):
            return None
        log_norm, alpha = params
        beta = 1.0 - alpha
        if abs(beta) < 1e-3:
            return None
        # integral I = (hi^b - lo^b) / b and its derivatives in b = 1 - alpha
        hb, lb = hi**beta, lo**beta
        integral = (hb - lb) / beta
        d_beta = (hb * log_hi - lb * log_lo - integral) / beta
        d2_beta = (hb * log_hi**2 - lb * log_lo**2 - 2.0 * d_beta) / beta
        scale = 10.0**log_norm * live
        model = scale * integral
        dm_norm, dm_alpha = _LN10 * model, -scale * d_beta
        first, second = statistic.derivatives(model)
        gradient = 2.0 * np.array([first @ dm_norm, first @ dm_alpha])
        hessian = 2.0 * np.array(
            [
                [second @ dm_norm**2 + first @ (_LN10 * dm_norm), 0.0],
                [
                    second @ (dm_norm * dm_alpha) + first @ (_LN10 * dm_alpha),
                    second @ dm_alpha**2 + first @ (scale * d2_beta),
                ],
            ]
        )
        hessian[0, 1] = hessian[1, 0]
        convex = bool(hessian[0, 0] > 0 and np.linalg.det(hessian) > 0)
        if convex:
            step = -np.linalg.solve(hessian, gradient)
        else:
            step = -gradient / max(float(np.max(np.abs(gradient))), 1.0)
        size = 1.0
        while size > 1e-12:
            trial = params + size * step
            trial_value = _decay_wstat(trial, lo, hi, live, statistic)
            if trial_value <= value:
                break
            size *= 0.5
        else:  # no step lowers W: at the minimum to rounding, unless W still slopes
            return (params, value) if abs(float(gradient @ step)) < 1e-8 else None
        params, value = trial, trial_value
        # converged when the whole Newton step of a convex W is below the tolerance
        # (not the step taken: one halved many times on a flat W is short, not final)
        if convex and float(np.max(np.abs(step))) < NEWTON_STEP:
            return params, value
    return None


def _initial_guess(
    lo: np.ndarray, hi: np.ndarray, live: np.ndarray, counts: np.ndarray, background: np.ndarray
) -> np.ndarray:
    """Weighted log-log line through the net rates: a start for the likelihood fit."""
    mid = np.sqrt(lo * hi)
    rate = (counts - background) / np.maximum(live * (hi - lo), 1e-12)
    positive = rate > 0
    if np.count_nonzero(positive) < 2:
        return np.array([0.0, 1.0])
    slope, intercept = np.polyfit(
        np.log10(mid[positive]),
        np.log10(rate[positive]),
        1,
        w=np.sqrt(np.maximum(counts[positive], 1.0)),
    )
    return np.array([intercept, -slope])


def _rate_columns(
    bins: Bins, regions: ExtractionRegions | None, deadc: float, vignetting: float, errors: str
) -> dict[str, np.ndarray]:
    width = bins.stop - bins.start
    exposure = bins.gti_time * deadc
    ratio = regions.area_ratio if regions else 0.0
    correction = 1.0 / (regions.psf_frac_effective * vignetting) if regions else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        per_second = np.where(exposure > 0, 1.0 / exposure, 0.0)
    net = (bins.src_counts - ratio * bins.bkg_counts) * per_second * correction
    sigma = np.hypot(
        poisson_sigma(bins.src_counts, errors), ratio * poisson_sigma(bins.bkg_counts, errors)
    )
    back = ratio * bins.bkg_counts * per_second
    back_err = ratio * poisson_sigma(bins.bkg_counts, errors) * per_second
    return {
        "TIME": 0.5 * (bins.start + bins.stop),
        "TIMEDEL": width,
        "RATE": net,
        "ERROR": sigma * per_second * correction,
        "FRACEXP": np.where(width > 0, exposure / width, 0.0),
        "BACKV": back,
        "BACKE": back_err,
        "COUNTS": bins.src_counts,
        "BKG_CNTS": bins.bkg_counts,
        "EXPOSURE": exposure,
    }


#: The RATE columns (OGIP/93-003), defined once.
RATE_COLUMNS = column_template(
    [
        ("TIME", "D", "s"),
        ("TIMEDEL", "D", "s"),
        ("RATE", "E", "count/s"),
        ("ERROR", "E", "count/s"),
        ("FRACEXP", "E", None),
        ("BACKV", "E", "count/s"),
        ("BACKE", "E", "count/s"),
        ("COUNTS", "J", "count"),
        ("BKG_CNTS", "J", "count"),
        ("EXPOSURE", "E", "s"),
    ]
)


def _rate_hdu(
    columns: dict[str, np.ndarray],
    header: fits.Header,
    config: LightcurveConfig,
    regions: ExtractionRegions | None,
    deadc: float,
    vignetting: float,
    status: str,
    exposure: float,
    observation: list[fits.Card] | None = None,
) -> fits.BinTableHDU:
    hdu = filled_table(RATE_COLUMNS, columns, len(columns["TIME"]), "RATE")
    h = hdu.header
    apply_cards(h, observation if observation is not None else observation_cards(header))
    keywords = (
        ("HDUCLASS", "OGIP", "format conforms to OGIP standards"),
        ("HDUCLAS1", "LIGHTCURVE", "light curve dataset"),
        ("HDUCLAS2", "NET", "background-subtracted"),
        ("HDUCLAS3", "RATE", "rates, not counts"),
        ("HDUVERS", "1.1.0", "OGIP/93-003 version"),
        ("TIMEZERO", 0.0, "[s] TIME column is mission time"),
        ("TIMEPIXR", 0.5, "TIME is the bin centre"),
        ("TIERRELA", 1e-8, "relative time error"),
        ("EXPOSURE", exposure, "[s] live good time of the light curve"),
        ("DEADC", deadc, "LIVETIME / ONTIME applied to the exposure"),
        ("VIGNET", vignetting, "vignetting at the source off-axis angle"),
        ("BINMODE", config.binning.upper(), "COUNTS: min source counts per bin"),
        ("MINCOUNT", config.min_counts, "source counts per bin (COUNTS binning)"),
        ("BINSIZE", config.bin_s, "[s] bin width (FIXED binning)"),
        ("ERRMODE", config.errors.upper(), "Poisson errors: GEHRELS or SQRT"),
        ("PI_MIN", config.pi_min, "lowest PI channel used"),
        ("PI_MAX", config.pi_max, "highest PI channel used"),
        ("LC_STAT", status, "ok, no_detection or no_events"),
    )
    apply_cards(h, [card(key, value, comment) for key, value, comment in keywords], shared=False)
    if regions is not None:
        apply_cards(h, [card(k, *v) for k, v in regions.keywords().items()], shared=False)
    for i, name in enumerate(("TIME", "TIMEDEL", "RATE", "ERROR"), start=1):
        h.comments[f"TTYPE{i}"] = {
            "TIME": "bin centre, mission time",
            "TIMEDEL": "bin width",
            "RATE": "net, PSF- and vignetting-corrected rate",
            "ERROR": "1-sigma error of RATE",
        }[name]
    return hdu


def build_lightcurve(
    l2_events: fits.HDUList,
    position: Mapping[str, Any],
    calibration: Mapping[str, Any],
    config: LightcurveConfig,
) -> tuple[fits.HDUList, dict[str, Any]]:
    """The light curve HDUList and its decay fit (see the module docstring)."""
    if config.pi_max < config.pi_min:
        raise BadInput(f"pi_max ({config.pi_max}) is below pi_min ({config.pi_min})")
    events = events_table(l2_events)
    header = events.header
    intervals = good_time_intervals(l2_events)
    deadc = dead_time_correction(header)
    status = extraction_status(position, events, intervals)
    regions = None
    vignetting = 1.0
    if status == "ok":
        require_columns(events, ("TIME", "X", "Y", "PI"))
        data = events.data
        regions = build_regions(header, position, calibration, config)
        vignetting = float(calibration["VIGNET"](np.float64(regions.offaxis_arcmin)))
        pi = data["PI"]
        in_band = (pi >= config.pi_min) & (pi <= config.pi_max)
        in_src, in_bkg = regions.masks(data["X"], data["Y"])
        times = data["TIME"]
        src_times, bkg_times = times[in_src & in_band], times[in_bkg & in_band]
        if config.binning == "fixed":
            bins = fixed_bins(src_times, bkg_times, intervals, config)
        else:
            bins = counts_bins(src_times, bkg_times, intervals, config.min_counts)
    else:
        empty = np.empty(0)
        bins = Bins(empty, empty, empty.astype(np.int64), empty.astype(np.int64), empty)
    exposure = live_exposure(intervals, header)
    columns = _rate_columns(bins, regions, deadc, vignetting, config.errors)
    observation = observation_cards(header)  # made once, copied into each HDU
    rate = _rate_hdu(
        columns, header, config, regions, deadc, vignetting, status, exposure, observation
    )
    hdul = fits.HDUList(
        [
            primary_hdu(header, f"mxt lightcurve {VERSION}", observation),
            rate,
            gti_hdu(intervals, header, observation),
        ]
    )
    t0 = float(header.get("TRIGTIME", header.get("TSTART", 0.0)))
    if regions is None:
        fit = empty_fit(t0, 0, status)
    else:
        width = bins.stop - bins.start
        live = np.where(width > 0, bins.gti_time * deadc / np.maximum(width, 1e-12), 0.0)
        fit = fit_decay(bins, live, regions.area_ratio, regions.psf_frac_effective * vignetting, t0)
    return hdul, fit


def _run(
    inputs: Mapping[str, Any], calibration: Mapping[str, Any], config: LightcurveConfig
) -> dict[str, Any]:
    lightcurve, fit = build_lightcurve(inputs["l2_events"], inputs["position"], calibration, config)
    return {"lightcurve": lightcurve, "lightcurve_fit": fit}


BRICK = Brick(
    name="lightcurve",
    version=VERSION,
    inputs=(
        L2_EVENTS,
        POSITION,
    ),
    outputs=(
        LIGHTCURVE,
        LIGHTCURVE_FIT,
    ),
    caldb=("PSF", "VIGNET", "TELDEF", "BADPIX"),
    config=LightcurveConfig,
    run=_run,
)
