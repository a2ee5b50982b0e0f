"""Light curve brick on synthetic L2 scenes whose truth is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError

from bricks.calibration import model_calibrations
from bricks.errors import BadInput
from bricks.lightcurve import BRICK, Bins, LightcurveConfig, fit_decay
from tests.bricks.synthetic_l2 import Scene, make_l2, position_of

CAL = model_calibrations()


def _expected_in_gtis(scene: Scene, vignetting: float) -> float:
    """Expected detected source counts inside the scene's GTIs (before edge losses)."""
    t0 = scene.tstart - scene.trigger_before_s
    k = 1.0 - scene.alpha

    def integral(a: float, b: float) -> float:
        return ((b - t0) ** k - (a - t0) ** k) / k

    total = integral(scene.tstart, scene.tstart + scene.duration_s)
    inside = sum(integral(scene.tstart + a, scene.tstart + b) for a, b in scene.gtis)
    return scene.source_counts * vignetting * inside / total


@pytest.fixture(scope="module")
def bright():
    scene = Scene(source_counts=20000, seed=11)
    l2, truth = make_l2(scene)
    return scene, l2, truth


def _run(l2, position, **params):
    return BRICK({"l2_events": l2, "position": position}, CAL, params)


@pytest.mark.parametrize("params", [{}, {"binning": "fixed", "bin_s": 100.0}])
def test_decay_index_is_recovered(bright, params):
    scene, l2, truth = bright
    fit = _run(l2, position_of(truth), **params)["lightcurve_fit"]
    assert fit["status"] == "ok"
    assert fit["alpha_err"] < 0.05
    assert abs(fit["alpha"] - scene.alpha) < 3 * fit["alpha_err"] + 0.01
    assert fit["t0"] == pytest.approx(truth["t0"])
    assert fit["dof"] == fit["n_bins"] - 2
    # The W statistic of a good fit is of the order of its degrees of freedom.
    assert fit["wstat"] < 2.0 * fit["dof"] + 30


def test_corrected_rates_add_up_to_the_source_counts(bright):
    scene, l2, truth = bright
    rate = _run(l2, position_of(truth))["lightcurve"]["RATE"].data
    total = float(np.sum(rate["RATE"] * rate["EXPOSURE"]))
    expected = _expected_in_gtis(scene, truth["vignetting"])
    # Poisson error of the net counts, scaled by the PSF correction (~1 / 0.6).
    sigma = np.sqrt(np.sum(rate["COUNTS"]) + np.sum(rate["BKG_CNTS"])) / 0.6
    assert abs(total - expected) < 4 * sigma


def test_counts_bins_stay_inside_gtis_and_hold_min_counts(bright):
    scene, l2, truth = bright
    out = _run(l2, position_of(truth), min_counts=25)["lightcurve"]
    rate, header = out["RATE"].data, out["RATE"].header
    gtis = np.array(scene.gtis) + scene.tstart
    start = rate["TIME"] - rate["TIMEDEL"] / 2
    stop = rate["TIME"] + rate["TIMEDEL"] / 2
    which = [
        np.flatnonzero((gtis[:, 0] <= a + 1e-6) & (b <= gtis[:, 1] + 1e-6))
        for a, b in zip(start, stop, strict=True)
    ]
    assert all(len(w) == 1 for w in which), "a bin spans two GTIs"
    gti_of_bin = np.array([w[0] for w in which])
    for g in np.unique(gti_of_bin):
        counts = rate["COUNTS"][gti_of_bin == g]
        assert np.all(counts >= 25) or len(counts) == 1
    assert np.allclose(rate["FRACEXP"], 1.0)
    # Every source-circle event is in exactly one bin (independent selection).
    events = l2["EVENTS"].data
    radius_pix = header["SRC_RAD"] * 60.0 / 13.4520
    inside = np.hypot(events["X"] - truth["x"], events["Y"] - truth["y"]) <= radius_pix
    assert abs(int(rate["COUNTS"].sum()) - int(inside.sum())) <= 2  # radius rounding


def test_fixed_bins_carry_their_fractional_exposure(bright):
    scene, l2, truth = bright
    rate = _run(l2, position_of(truth), binning="fixed", bin_s=400.0)["lightcurve"]["RATE"].data
    since = rate["TIME"] - scene.tstart
    # Bins [1200, 1600) overlap the first GTI (0-1500) for 300 s; [1600, 2000) not at all.
    straddling = np.flatnonzero(np.isclose(since, 1400.0))
    assert len(straddling) == 1
    assert rate["FRACEXP"][straddling[0]] == pytest.approx(0.75)
    assert not np.any(np.isclose(since, 1800.0))
    assert rate["EXPOSURE"][straddling[0]] == pytest.approx(300.0)


def test_ogip_rate_file(bright):
    scene, l2, truth = bright
    out = _run(l2, position_of(truth))["lightcurve"]
    assert [h.name for h in out] == ["PRIMARY", "RATE", "GTI"]
    h = out["RATE"].header
    assert (h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS3"]) == ("OGIP", "LIGHTCURVE", "RATE")
    for key in (
        "TIMEZERO",
        "MJDREFI",
        "MJDREFF",
        "TIMESYS",
        "TSTART",
        "TSTOP",
        "EXPOSURE",
        "TELESCOP",
        "INSTRUME",
        "TRIGTIME",
    ):
        assert key in h, key
    names = out["RATE"].columns.names
    for column in ("TIME", "TIMEDEL", "RATE", "ERROR", "FRACEXP", "BACKV", "BACKE"):
        assert column in names
    assert out["RATE"].columns["RATE"].unit == "count/s"
    assert out["GTI"].header["HDUCLAS1"] == "GTI"
    assert h["EXPOSURE"] == pytest.approx(sum(b - a for a, b in scene.gtis))


def test_psf_fraction_of_an_unclipped_circle_matches_the_model(bright):
    _, l2, truth = bright
    h = _run(l2, position_of(truth), enclosed_fraction=0.5)["lightcurve"]["RATE"].header
    # Numerical integral of the PSF density over the circle vs the analytic fraction.
    assert h["PSFFRAC"] == pytest.approx(0.5, abs=0.01)
    assert h["PSFFRAC"] > h["PSFFREFF"] > 0.0


def test_sqrt_errors_are_smaller_than_gehrels(bright):
    _, l2, truth = bright
    gehrels = _run(l2, position_of(truth))["lightcurve"]["RATE"].data["ERROR"]
    root = _run(l2, position_of(truth), errors="sqrt")["lightcurve"]["RATE"].data["ERROR"]
    assert np.all(root < gehrels)


def test_no_detection_gives_products_that_say_so(bright):
    _, l2, _ = bright
    out = _run(l2, {"status": "no_detection", "ra": None, "dec": None})
    assert len(out["lightcurve"]["RATE"].data) == 0
    assert out["lightcurve"]["RATE"].header["LC_STAT"] == "no_detection"
    assert out["lightcurve_fit"]["status"] == "no_detection"
    assert out["lightcurve_fit"]["alpha"] is None


def test_empty_event_list(bright):
    _, l2, truth = bright
    empty = fits.HDUList(
        [
            l2[0],
            fits.BinTableHDU(l2["EVENTS"].data[:0], l2["EVENTS"].header, name="EVENTS"),
            l2["GTI"],
        ]
    )
    out = _run(empty, position_of(truth))
    assert out["lightcurve"]["RATE"].header["LC_STAT"] == "no_events"
    assert out["lightcurve_fit"]["status"] == "no_events"


def test_faint_source_reports_too_few_bins():
    l2, truth = make_l2(Scene(source_counts=30, bkg_rate=0.05, seed=5))
    fit = _run(l2, position_of(truth))["lightcurve_fit"]
    assert fit["status"] == "too_few_bins"
    assert fit["alpha"] is None


def test_without_trigtime_t0_is_tstart(bright):
    _, l2, truth = bright
    hdul = copy.deepcopy(l2)
    del hdul["EVENTS"].header["TRIGTIME"]
    fit = _run(hdul, position_of(truth))["lightcurve_fit"]
    assert fit["t0"] == hdul["EVENTS"].header["TSTART"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"binning": "adaptive"}, "binning"),
        ({"bin_s": -1.0}, "bin_s"),
        ({"min_counts": 0}, "min_counts"),
        ({"colour": 1}, "colour"),
        ({"bkg_inner_arcmin": 20.0, "bkg_outer_arcmin": 10.0}, "bkg_outer_arcmin"),
    ],
)
def test_bad_parameters_are_named(params, field):
    with pytest.raises(ValidationError, match=field):
        LightcurveConfig(**params)


def test_missing_column_and_gti_are_named(bright):
    _, l2, truth = bright
    events = l2["EVENTS"]
    columns = fits.ColDefs([c for c in events.columns if c.name != "PI"])
    no_pi = fits.HDUList(
        [l2[0], fits.BinTableHDU.from_columns(columns, events.header, name="EVENTS"), l2["GTI"]]
    )
    with pytest.raises(BadInput, match="PI"):
        _run(no_pi, position_of(truth))
    with pytest.raises(BadInput, match="GTI"):
        _run(fits.HDUList([l2[0], events]), position_of(truth))
    with pytest.raises(BadInput, match="'x'"):
        _run(l2, {"status": "detected", "y": 3.0})
    with pytest.raises(BadInput, match="pi_max"):
        _run(l2, position_of(truth), pi_min=500, pi_max=100)


def snapshot(hdul: fits.HDUList) -> list:
    """Header text and a data copy of each HDU (deepcopy of an HDUList drops cards)."""
    return [(h.header.tostring(), None if h.data is None else np.array(h.data)) for h in hdul]


def assert_unchanged(hdul: fits.HDUList, before: list) -> None:
    for (header, data), hdu in zip(before, hdul, strict=True):
        assert hdu.header.tostring() == header
        if data is not None:
            assert np.array_equal(np.array(hdu.data), data)


def test_inputs_are_not_modified(bright):
    _, l2, truth = bright
    before = snapshot(l2)
    position = position_of(truth)
    kept = dict(position)
    _run(l2, position)
    assert position == kept
    assert_unchanged(l2, before)


def test_counts_bins_never_split_a_frame():
    """Events of one 0.1 s frame share their TIME: no zero-width bins, no split frames."""
    scene = Scene(source_counts=30000, seed=12)
    l2, truth = make_l2(scene)
    events = l2["EVENTS"].data.copy()
    events["TIME"] = scene.tstart + (np.floor((events["TIME"] - scene.tstart) / 0.1) + 0.5) * 0.1
    framed = fits.HDUList(
        [l2[0], fits.BinTableHDU(events, l2["EVENTS"].header, name="EVENTS"), l2["GTI"]]
    )
    rate = _run(framed, position_of(truth), min_counts=3)["lightcurve"]["RATE"].data
    assert np.all(rate["TIMEDEL"] > 0)
    start = rate["TIME"] - rate["TIMEDEL"] / 2
    radius_pix = 11.0296 * 60.0 / 13.4520
    inside = np.hypot(events["X"] - truth["x"], events["Y"] - truth["y"]) <= radius_pix * 0.99
    times = events["TIME"][inside]
    bin_of_event = np.searchsorted(start, times, side="right") - 1
    for t in np.unique(times[:2000]):
        assert len(np.unique(bin_of_event[times == t])) == 1
    assert np.median(rate["COUNTS"]) >= 3


def test_merging_adjacent_bins_for_the_fit_changes_nothing_but_the_cost(bright):
    """Summing adjacent bins of one live fraction is exact: same decay, same error."""
    scene, l2, truth = bright
    binned = _run(l2, position_of(truth), min_counts=5)
    full = binned["lightcurve_fit"]
    rate = binned["lightcurve"]["RATE"].data
    assert full["n_bins"] > 2000 > full["n_groups"]  # the brick merged for its fit
    start, stop = rate["TIME"] - rate["TIMEDEL"] / 2, rate["TIME"] + rate["TIMEDEL"] / 2
    bins = Bins(start, stop, rate["COUNTS"], rate["BKG_CNTS"], rate["EXPOSURE"])
    header = binned["lightcurve"]["RATE"].header
    area_ratio = float(np.sum(rate["BACKV"] * rate["EXPOSURE"]) / max(rate["BKG_CNTS"].sum(), 1))
    response = header["PSFFREFF"] * header["VIGNET"]
    live = rate["FRACEXP"]
    whole = fit_decay(bins, live, area_ratio, response, truth["t0"], max_groups=10_000)
    merged = fit_decay(bins, live, area_ratio, response, truth["t0"], max_groups=100)
    assert merged["n_groups"] <= 110 and whole["n_groups"] == whole["n_bins"]
    assert merged["alpha"] == pytest.approx(whole["alpha"], abs=0.1 * whole["alpha_err"])
    assert merged["alpha_err"] == pytest.approx(whole["alpha_err"], rel=0.05)
    assert whole["alpha"] == pytest.approx(full["alpha"], abs=0.1 * whole["alpha_err"])


def _fit_inputs(binned, t0):
    rate = binned["lightcurve"]["RATE"].data
    header = binned["lightcurve"]["RATE"].header
    start, stop = rate["TIME"] - rate["TIMEDEL"] / 2, rate["TIME"] + rate["TIMEDEL"] / 2
    bins = Bins(start, stop, rate["COUNTS"], rate["BKG_CNTS"], rate["EXPOSURE"])
    area_ratio = float(np.sum(rate["BACKV"] * rate["EXPOSURE"]) / max(rate["BKG_CNTS"].sum(), 1))
    return bins, rate["FRACEXP"], area_ratio, header["PSFFREFF"] * header["VIGNET"], t0


@pytest.mark.parametrize("min_counts", [5, 20, 100])
def test_newton_decay_fit_is_the_tight_simplex_optimum(bright, min_counts):
    """The analytic-Hessian Newton fit reaches the W minimum a tight simplex finds."""
    from scipy import optimize

    from bricks.fitting import WStat
    from bricks.lightcurve import _decay_wstat, _initial_guess, _newton_decay

    scene, l2, truth = bright
    bins, live_fraction, area_ratio, response, t0 = _fit_inputs(
        _run(l2, position_of(truth), min_counts=min_counts), truth["t0"]
    )
    usable = (bins.start > t0) & (live_fraction > 0)
    lo, hi = bins.start[usable] - t0, bins.stop[usable] - t0
    live = live_fraction[usable] * response
    counts = bins.src_counts[usable].astype(float)
    bkg = bins.bkg_counts[usable].astype(float)
    statistic = WStat(counts, bkg, area_ratio)
    start = _initial_guess(lo, hi, live, counts, area_ratio * bkg)
    newton = _newton_decay(start, lo, hi, live, statistic)
    assert newton is not None
    simplex = optimize.minimize(
        _decay_wstat,
        start,
        args=(lo, hi, live, statistic),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )
    assert newton[1] <= simplex.fun + 1e-9
    assert newton[0] == pytest.approx(simplex.x, abs=1e-6)
    fit = fit_decay(bins, live_fraction, area_ratio, response, t0, max_groups=10**6)
    assert fit["status"] == "ok" and fit["alpha"] == pytest.approx(newton[0][1], abs=1e-12)


def test_wstat_derivatives_match_finite_differences():
    """WStat.derivatives: each channel's first and second derivative in its source model."""
    from bricks.fitting import WStat

    rng = np.random.default_rng(5)
    for _ in range(400):
        s = float(rng.poisson(rng.choice([0.3, 3.0, 30.0])))
        b = float(rng.poisson(rng.choice([0.3, 3.0, 30.0])))
        statistic = WStat(np.array([s]), np.array([b]), float(rng.uniform(0.05, 1.5)))
        m = float(rng.gamma(2.0, 3.0) + 0.05)
        if b == 0 and s > 0 and abs(m - s / statistic.tsum) < 0.05 * m:
            continue  # the kink of the no-background case
        first, second = statistic.derivatives(np.array([m]))
        h = 1e-3 * m

        def term(x, statistic=statistic):
            return statistic(np.array([x])) / 2.0

        assert (term(m + h) - term(m - h)) / (2 * h) == pytest.approx(first[0], rel=1e-5, abs=1e-7)
        fd2 = (term(m + h) - 2 * term(m) + term(m - h)) / h**2
        assert fd2 == pytest.approx(second[0], rel=1e-3, abs=1e-6)


def test_wstat_object_equals_wstat_function():
    """WStat(...)(model) is the W statistic, channel cases included (s = 0, b = 0)."""
    from bricks.fitting import WStat, cash_statistic, wstat

    rng = np.random.default_rng(9)
    s = rng.poisson(2.0, 500).astype(float)
    b = rng.poisson(3.0, 500).astype(float)
    m = rng.gamma(1.0, 2.0, 500)
    assert WStat(s, b, 0.4)(m) == wstat(m, s, b, 0.4)
    # without background counts and a tiny area ratio, W tends to Cash's C (up to a constant)
    c0 = cash_statistic(m, s) - cash_statistic(s + 1e-300, s)
    assert wstat(m, s, np.zeros_like(s), 1e-9) == pytest.approx(c0, rel=1e-6)


def _power_law_bins(alpha: float, noise: bool) -> tuple[Bins, np.ndarray]:
    """400 log-spaced bins from 100 s to 20 ks of a decay of index ``alpha``."""
    from bricks.lightcurve import power_law_integral

    n = 400
    edges = np.geomspace(100.0, 20_000.0, n + 1)
    lo, hi = edges[:-1], edges[1:]
    counts = 4000.0 * power_law_integral(lo, hi, alpha)
    if noise:
        counts = np.random.default_rng(11).poisson(counts).astype(float)
    return Bins(lo, hi, counts, np.zeros(n), hi - lo), np.ones(n)


def _newton_on(bins: Bins, live: np.ndarray):
    from bricks.fitting import WStat
    from bricks.lightcurve import _initial_guess, _newton_decay

    zeros = np.zeros_like(live)
    start = _initial_guess(bins.start, bins.stop, live, bins.src_counts, zeros)
    statistic = WStat(bins.src_counts, zeros, 0.1)
    return _newton_decay(start, bins.start, bins.stop, live, statistic)


def test_decay_fit_at_alpha_one_falls_back_to_the_simplex():
    """At alpha = 1 Newton's closed-form integral is ill-conditioned and it gives up;
    the simplex then fits, and the brick's fit is still right."""
    bins, live = _power_law_bins(1.0, noise=False)
    assert _newton_on(bins, live) is None
    fit = fit_decay(bins, live, 0.1, 1.0, 0.0)
    assert fit["status"] == "ok" and fit["alpha"] == pytest.approx(1.0, abs=1e-3)


def test_decay_fit_by_newton_recovers_alpha():
    bins, live = _power_law_bins(1.3, noise=True)
    newton = _newton_on(bins, live)
    assert newton is not None
    fit = fit_decay(bins, live, 0.1, 1.0, 0.0)
    assert fit["status"] == "ok" and fit["alpha"] == pytest.approx(newton[0][1], abs=1e-9)
    assert fit["alpha"] == pytest.approx(1.3, abs=3 * fit["alpha_err"])
