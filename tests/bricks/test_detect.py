"""The detect brick: image, PSF-matched source list, ML position, error radius, region."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from pydantic import ValidationError

from bricks.calibration import Psf, model_calibrations
from bricks.detect import BRICK
from bricks.detect_fit import Aperture, cash, circular_radius90, make_aperture
from bricks.errors import BadInput
from tests.bricks.localisation_scene import (
    TSTART,
    Scene,
    SceneSource,
    draw_events,
    fitsverify_errors,
    l2_hdulist,
)

CAL = model_calibrations()
TRUTH = SceneSource(150.05, 20.08, 2000.0)


def _separation_arcsec(position: dict, source: SceneSource) -> float:
    found = SkyCoord(position["ra"], position["dec"], unit="deg")
    return float(found.separation(SkyCoord(source.ra, source.dec, unit="deg")).arcsec)


def _detect(scene: Scene, **config: object) -> dict:
    return BRICK({"l2_events": l2_hdulist(scene)}, CAL, config)


@pytest.mark.parametrize("roll", [0.0, 27.0, 301.0])
def test_bright_source_is_localised_with_an_honest_radius(roll: float) -> None:
    out = _detect(Scene(sources=(TRUTH,), roll=roll, seed=21))
    position = out["position"]
    assert position["status"] == "detected" and position["method"] == "psf_ml_cash"
    assert position["n_sources"] == 1
    offset = _separation_arcsec(position, TRUTH)
    assert offset < 30.0
    # 2,000 counts, a 3.4' core: the statistical radius is ~10-25", total adds 25".
    assert 5.0 < position["err90_stat_arcsec"] < 30.0
    total = np.hypot(position["err90_stat_arcsec"], 25.0)
    assert position["err90_arcsec"] == pytest.approx(total)
    # counts: the whole-PSF source counts after vignetting and the lost bad column.
    assert position["counts"] == pytest.approx(TRUTH.counts, rel=0.12)
    assert position["snr"] > 20.0 and position["ts"] > 100.0
    assert position["roll"] == pytest.approx(roll)
    assert position["exposure"] == pytest.approx(300.0)
    assert position["rate"] == pytest.approx(position["counts"] / 300.0)


@pytest.mark.parametrize(
    ("where", "dx", "dy"), [("bad column", 59.5, 0.0), ("edge", 118.0, 10.0), ("corner", 115, 115)]
)
def test_sources_on_the_bad_column_or_the_edge(where: str, dx: float, dy: float) -> None:
    """The exposure-aware likelihood: a PSF cut by the bad column or the detector edge."""
    from bricks.wcs import sky_to_radec

    ra, dec = sky_to_radec(np.array([256.5 + dx]), np.array([256.5 + dy]), 150.0, 20.0)
    source = SceneSource(float(ra[0]), float(dec[0]), 600.0)
    position = _detect(Scene(sources=(source,), seed=3))["position"]
    assert position["status"] == "detected", where
    assert _separation_arcsec(position, source) < 1.5 * position["err90_stat_arcsec"]
    # counts are corrected to the on-axis, whole-PSF equivalent
    assert position["counts"] == pytest.approx(600.0, rel=0.2)


def test_two_sources_are_both_listed_and_the_target_can_be_chosen() -> None:
    faint = SceneSource(149.93, 19.90, 400.0)
    scene = Scene(sources=(faint, TRUTH), roll=15.0, seed=4)
    out = _detect(scene)
    table = out["sources"]["SRCLIST"].data
    assert len(table) == 2
    assert table["SNR"][0] > table["SNR"][1]
    assert _separation_arcsec(out["position"], TRUTH) < 30.0
    chosen = _detect(scene, select="nearest_target")  # RA_OBJ/DEC_OBJ: the faint one
    assert _separation_arcsec(chosen["position"], faint) < 60.0
    chosen = _detect(scene, select="nearest_target", target_ra_deg=150.05, target_dec_deg=20.08)
    assert _separation_arcsec(chosen["position"], TRUTH) < 30.0


def test_the_arms_orientation_matters() -> None:
    """The likelihood prefers the true roll: a PSF turned by 45° fits worse."""
    scene = Scene(sources=(TRUTH,), roll=30.0, seed=8, background_counts=50)
    cols = draw_events(scene)
    x, y = cols["X"], cols["Y"]
    from bricks.wcs import sky_pixels

    tx, ty = sky_pixels(np.array([TRUTH.ra]), np.array([TRUTH.dec]), 150.0, 20.0)
    ap: Aperture = make_aperture(x, y, (tx[0], ty[0]), 15.0, 13.45 / 60, np.ones((512, 512)), 0.25)
    params = np.array([0.0, 0.0, np.log(2000.0), np.log(0.01)])
    psf = Psf.model()
    assert cash(params, ap, psf, 30.0) < cash(params, ap, psf, 75.0) - 50.0
    # the PSF has the cross's 90° symmetry: a quarter turn changes nothing.
    assert cash(params, ap, psf, 30.0) == pytest.approx(cash(params, ap, psf, 120.0))


def test_profiled_counts_are_the_four_parameter_optimum() -> None:
    """At a fixed position, the Newton-profiled N and b minimise the full Cash statistic."""
    from scipy.optimize import minimize

    from bricks.detect_fit import _best_counts, _psf_at

    scene = Scene(sources=(TRUTH,), roll=30.0, seed=8, background_counts=50)
    cols = draw_events(scene)
    from bricks.wcs import sky_pixels

    tx, ty = sky_pixels(np.array([TRUTH.ra]), np.array([TRUTH.dec]), 150.0, 20.0)
    ap = make_aperture(
        cols["X"], cols["Y"], (tx[0], ty[0]), 10.0, 13.45 / 60, np.ones((512, 512)), 0.5
    )
    psf = Psf.model()
    values = _psf_at(ap, psf, 30.0, 0.1, -0.1)
    reference = minimize(
        lambda p: cash(np.array([0.1, -0.1, p[0], p[1]]), ap, psf, 30.0),
        np.log([50.0, 1.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000},
    )
    # this scene's background is pinned at zero: N must still converge from any start
    for start in [(50.0, 1.0), (2000.0, 0.01), (1900.0, 1e-5)]:
        n, b = _best_counts(ap, values, *start)
        assert n == pytest.approx(np.exp(reference.x[0]), rel=1e-3)
        assert cash(np.array([0.1, -0.1, np.log(n), np.log(b)]), ap, psf, 30.0) <= (
            reference.fun + 1e-6
        )


def test_matched_filter_equals_direct_correlation() -> None:
    """The trimmed FFT grid (L ≥ n + k//2) keeps every sample of the direct correlation."""
    from scipy.signal import correlate

    from bricks.detect_search import kernel_autocorrelation, matched_filter

    rng = np.random.default_rng(5)
    image = rng.poisson(0.3, (40, 37)).astype(float)
    footprint = rng.random((40, 37)) > 0.1
    kernel = rng.random((31, 25))
    mf = matched_filter(image, footprint, kernel)
    assert mf.filtered == pytest.approx(correlate(image, kernel, mode="same"), abs=1e-9)
    assert mf.k2_sum == pytest.approx(correlate(footprint * 1.0, kernel**2, mode="same"), abs=1e-9)
    assert mf.autocorrelation == pytest.approx(kernel_autocorrelation(kernel), abs=1e-9)
    assert mf.autocorrelation == pytest.approx(correlate(kernel, kernel, mode="full"), abs=1e-9)


@pytest.mark.parametrize(("blocks", "block_pix"), [(32, 16), (1, 4), (2, 7), (29, 14)])
def test_background_interpolation_is_bilinear_zoom(blocks: int, block_pix: int) -> None:
    """The background's block-to-pixel gathers reproduce bilinear zoom between centres."""
    from scipy import ndimage

    from bricks.detect_search import _interpolate_blocks

    local = np.random.default_rng(blocks).random((blocks, blocks + 1))
    zoomed = ndimage.zoom(local, block_pix, order=1, mode="nearest", grid_mode=True)
    assert _interpolate_blocks(local, block_pix) == pytest.approx(zoomed, abs=1e-12)


def test_radius90_of_a_bivariate_normal() -> None:
    sigma = 0.2
    r = circular_radius90(np.eye(2) * sigma**2)
    assert r == pytest.approx(np.sqrt(4.605) * sigma, rel=1e-3)
    cov = np.array([[0.09, 0.03], [0.03, 0.02]])
    r = circular_radius90(cov)
    draws = np.random.default_rng(0).multivariate_normal([0, 0], cov, 200_000)
    assert np.mean(np.hypot(draws[:, 0], draws[:, 1]) <= r) == pytest.approx(0.9, abs=0.005)


def test_products_are_ogip_and_pass_fitsverify(tmp_path) -> None:
    scene = Scene(sources=(TRUTH,), seed=2)
    l2 = l2_hdulist(scene)
    out = BRICK({"l2_events": l2}, CAL)
    image = out["image"][0]
    inside = (l2["EVENTS"].data["X"] >= 0.5) & (l2["EVENTS"].data["X"] < 512.5)
    assert image.data.sum() == int(inside.sum())
    assert image.header["HDUCLAS1"] == "IMAGE" and image.header["BUNIT"] == "count"
    table = out["sources"]["SRCLIST"]
    assert table.header["HDUCLASS"] == "OGIP" and table.header["NSOURCES"] == 1
    for hdul in (out["image"], out["sources"]):
        for key in ("TELESCOP", "INSTRUME", "OBS_ID", "DATE", "CREATOR", "EXPOSURE", "TIMESYS"):
            assert key in hdul[0].header, key
    # the image is where the events are: the source's core is crowded.
    yy, xx = np.mgrid[1:513, 1:513]
    core = np.hypot(xx - out["position"]["x"], yy - out["position"]["y"]) <= 10
    far = np.hypot(xx - 256.5, yy - 256.5) <= 100
    assert image.data[core].mean() > 8 * image.data[far & ~core].mean()
    for name in ("image", "sources"):
        errors, report = fitsverify_errors(out[name], tmp_path / f"{name}.fits")
        assert errors == 0, report
    region = out["region"]
    assert region.startswith("# Region file format: DS9")
    assert "fk5" in region and f'{out["position"]["err90_arcsec"]:.2f}"' in region
    assert region.count("point(") == 1


def test_empty_observation_says_no_detection() -> None:
    scene = Scene(sources=(), background_counts=0)
    out = _detect(scene)
    assert out["position"]["status"] == "no_detection"
    assert "no events" in out["position"]["reason"]
    assert len(out["sources"]["SRCLIST"].data) == 0
    assert out["image"][0].data.sum() == 0
    assert "no detection" in out["region"]


def test_background_alone_gives_no_source() -> None:
    out = _detect(Scene(sources=(), background_counts=400, seed=9))
    assert out["position"]["status"] == "no_detection"
    assert out["position"]["n_sources"] == 0
    assert out["position"]["ra"] is None


def test_bad_inputs_are_named() -> None:
    l2 = l2_hdulist(Scene(sources=(TRUTH,)))
    l2["EVENTS"].data["X"][3] = np.nan
    with pytest.raises(BadInput, match="non-finite"):
        BRICK({"l2_events": l2}, CAL)
    cols = fits.ColDefs([fits.Column("TIME", "D", array=[1.0])])
    broken = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="EVENTS")])
    with pytest.raises(BadInput, match=r"\['X', 'Y'\]"):
        BRICK({"l2_events": broken}, CAL)
    with pytest.raises(BadInput, match="PSF"):
        BRICK({"l2_events": l2_hdulist(Scene())}, {k: v for k, v in CAL.items() if k != "PSF"})
    with pytest.raises(ValidationError, match="threshold_sigma"):
        BRICK({"l2_events": l2_hdulist(Scene())}, CAL, {"threshold_sigma": -1})
    with pytest.raises(ValidationError, match="extra"):
        BRICK({"l2_events": l2_hdulist(Scene())}, CAL, {"fit_radius": 3})
    scene = Scene(sources=(TRUTH,), header_extra={"RA_OBJ": None})
    l2 = l2_hdulist(scene)
    del l2["EVENTS"].header["RA_OBJ"]
    with pytest.raises(BadInput, match="RA_OBJ"):
        BRICK({"l2_events": l2}, CAL, {"select": "nearest_target"})


def test_no_good_time_says_so() -> None:
    scene = Scene(sources=(TRUTH,), gtis=((TSTART + 1e5, TSTART + 1e5 + 10),))
    out = _detect(scene)
    assert out["position"]["status"] == "no_detection"
    assert "no good time" in out["position"]["reason"]
    assert out["position"]["exposure"] == 0.0


def test_broken_attitude_is_named() -> None:
    l2 = l2_hdulist(Scene(sources=(TRUTH,)))
    l2["ATTITUDE"].data["ROLL"][5] = np.nan
    with pytest.raises(BadInput, match="ATTITUDE holds 1 non-finite"):
        BRICK({"l2_events": l2}, CAL)
    l2 = l2_hdulist(Scene(sources=(TRUTH,)))
    att = l2["ATTITUDE"]
    cols = [c for c in att.columns if c.name != "ROLL"]
    l2["ATTITUDE"] = fits.BinTableHDU.from_columns(cols, name="ATTITUDE")
    with pytest.raises(BadInput, match=r"ATTITUDE lacks column\(s\) \['ROLL'\]"):
        BRICK({"l2_events": l2}, CAL)


def test_input_is_not_mutated() -> None:
    l2 = l2_hdulist(Scene(sources=(TRUTH,)))
    before = [h.header.tostring() for h in l2]
    x = np.array(l2["EVENTS"].data["X"])
    BRICK({"l2_events": l2}, CAL)
    assert [h.header.tostring() for h in l2] == before
    assert np.array_equal(l2["EVENTS"].data["X"], x)


def test_binned_search_finds_what_the_unbinned_search_finds() -> None:
    """The search on 4×4-binned pixels (54″) finds the bright source where the unbinned
    one does, with the same significance and counts to a few per cent."""
    from bricks.detect import DetectConfig, search_footprint, search_sources
    from bricks.detect_search import counts_image
    from bricks.exposure import ExposureConfig, observation_exposure
    from bricks.wcs import sky_pixels

    l2 = l2_hdulist(Scene(sources=(TRUTH,), roll=27.0, seed=21))
    exposure = observation_exposure(l2, CAL, ExposureConfig())
    events = l2["EVENTS"].data
    image = counts_image(events["X"], events["Y"], 512)
    tx, ty = sky_pixels(np.array([TRUTH.ra]), np.array([TRUTH.dec]), 150.0, 20.0)
    found = {}
    for binning in (1, 4):
        config = DetectConfig(search_binning=binning)
        seen = search_footprint(exposure, binning)
        found[binning] = search_sources(image, seen, CAL["PSF"], 27.0, 13.45 / 60, config)
        assert len(found[binning]) == 1
        source = found[binning][0]
        assert np.hypot(source.x - tx[0], source.y - ty[0]) * 13.45 < 40.0  # arcsec
    fine, coarse = found[1][0], found[4][0]
    assert coarse.significance == pytest.approx(fine.significance, rel=0.05)
    assert coarse.counts == pytest.approx(fine.counts, rel=0.05)
    assert coarse.background == pytest.approx(fine.background, rel=0.05)


def test_binning_keeps_pixel_centres_and_background_rates() -> None:
    """A binned pixel's centre in unbinned pixels; a partly seen binned pixel's rate."""
    from bricks.detect_search import Candidate, bin_image, local_background, unbinned

    candidate = unbinned(Candidate(x=1.0, y=3.0, counts=5.0, significance=6.0, background=16.0), 4)
    assert (candidate.x, candidate.y, candidate.background) == (2.5, 10.5, 1.0)
    rng = np.random.default_rng(3)
    footprint = rng.random((128, 128)) > 0.2  # a fifth of the pixels unseen
    image = np.where(footprint, rng.poisson(2.0, footprint.shape), 0)
    mask = np.zeros((32, 32), dtype=bool)
    # a boolean footprint and its 0/1 float version give the same background
    no_mask = np.zeros_like(footprint)
    assert local_background(image, footprint, no_mask, 16, 5) == pytest.approx(
        local_background(image, footprint.astype(float), no_mask, 16, 5)
    )
    # binned 4×4 with the fraction seen: the rate of a fully seen binned pixel, 16 × 2
    binned = local_background(bin_image(image, 4), bin_image(footprint * 1.0, 4) / 16, mask, 4, 5)
    assert np.median(binned) == pytest.approx(32.0, rel=0.03)


def test_fit_far_from_its_start_is_repeated_about_itself() -> None:
    """Started 2′ away on either side, the fit ends where it does started at the truth:
    the aperture is centred again on a fit that left its centre."""
    from bricks.detect import DetectConfig, localise_source
    from bricks.detect_search import Candidate
    from bricks.exposure import ExposureConfig, exposure_map
    from bricks.wcs import sky_pixels

    source = SceneSource(150.05, 20.08, 300.0)
    l2 = l2_hdulist(Scene(sources=(source,), roll=27.0, seed=5))
    expmap, _, _ = exposure_map(l2, CAL, ExposureConfig())
    events = l2["EVENTS"].data
    x, y = np.asarray(events["X"], float), np.asarray(events["Y"], float)
    tx, ty = sky_pixels(np.array([source.ra]), np.array([source.dec]), 150.0, 20.0)
    pixel_arcmin = 13.45 / 60
    fits_ = []
    for shift in (0.0, -2.0, 2.0):
        start = Candidate(tx[0] + shift / pixel_arcmin, ty[0], 300.0, 10.0, 0.0)
        relative = expmap / expmap.max()
        fit = localise_source(
            x, y, start, [start], relative, CAL["PSF"], 27.0, pixel_arcmin, DetectConfig()
        )
        fits_.append(fit)
    for fit in fits_[1:]:
        moved = np.hypot(fit.x - fits_[0].x, fit.y - fits_[0].y) * 13.45
        assert moved < 0.1 * fits_[0].err90_stat_arcsec


def test_relative_exposure_is_the_map_over_its_on_axis_value() -> None:
    """The fit's exposure, pixel by pixel: the map's value over the on-axis exposure
    (seconds × the best detector weight, the map's maximum for a steady pointing)."""
    from bricks.detect import relative_exposure_at
    from bricks.exposure import ExposureConfig, observation_exposure

    exposure = observation_exposure(l2_hdulist(Scene(roll=27.0)), CAL, ExposureConfig())
    expmap = exposure.map()
    assert exposure.on_axis_seconds == pytest.approx(float(expmap.max()), rel=1e-6)
    relative = relative_exposure_at(exposure)
    rng = np.random.default_rng(8)
    x, y = rng.uniform(0.5, 512.5, 4000), rng.uniform(0.5, 512.5, 4000)
    nearest = expmap[np.floor(y - 0.5).astype(int), np.floor(x - 0.5).astype(int)]
    assert relative(x, y) == pytest.approx(nearest / exposure.on_axis_seconds, abs=1e-7)
    assert np.all(relative(np.array([0.4, 600.0, 100.0]), np.array([100.0, 100.0, -3.0])) == 0)


@pytest.mark.parametrize(("counts", "seed"), [(2000.0, 8), (150.0, 12)])
def test_newton_position_is_the_profiled_likelihood_optimum(counts: float, seed: int) -> None:
    """The fit's Newton iterations end where a tight simplex on the profiled Cash
    statistic ends (bright and faint), started from an aperture centred 0.7′ away."""
    from scipy.optimize import minimize

    from bricks.detect_fit import _best_counts, _psf_at, fit_position
    from bricks.wcs import sky_pixels

    source = SceneSource(150.05, 20.08, counts)
    cols = draw_events(Scene(sources=(source,), roll=30.0, seed=seed, background_counts=300))
    tx, ty = sky_pixels(np.array([source.ra]), np.array([source.dec]), 150.0, 20.0)
    pixel_arcmin = 13.45 / 60
    centre = (tx[0] + 0.5 / pixel_arcmin, ty[0] - 0.5 / pixel_arcmin)
    ap = make_aperture(cols["X"], cols["Y"], centre, 10.0, pixel_arcmin, np.ones((512, 512)), 0.5)
    psf = Psf.model()
    fit = fit_position(ap, psf, 30.0, counts, pixel_arcmin, centre)
    assert fit is not None and fit.converged

    def profiled(p: np.ndarray) -> float:
        values = _psf_at(ap, psf, 30.0, p[0], p[1])
        n, b = _best_counts(ap, values, counts, 1.0)
        return float(cash(np.array([p[0], p[1], np.log(n), np.log(b)]), ap, psf, 30.0))

    reference = minimize(
        profiled, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-8}
    )
    found = np.array([fit.x - centre[0], fit.y - centre[1]]) * pixel_arcmin
    assert np.hypot(*(found - reference.x)) * 60.0 < 0.2  # arcsec
    assert profiled(found) <= reference.fun + 1e-3
