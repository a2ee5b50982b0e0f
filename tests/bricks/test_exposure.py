"""The exposure brick: GTI × attitude × bad pixels × vignetting on the sky grid."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError

from bricks.calibration import BadPixels, Geometry, Vignetting, model_calibrations
from bricks.errors import BadInput
from bricks.exposure import BRICK, detector_weight
from tests.bricks.localisation_scene import TSTART, Scene, fitsverify_errors, l2_hdulist

GEOMETRY = Geometry.model()
SCALE_ARCMIN = GEOMETRY.plate_scale_arcsec / 60.0


def _expmap(l2: fits.HDUList, **config: object) -> fits.PrimaryHDU:
    return BRICK({"l2_events": l2}, model_calibrations(), config)["expmap"][0]


def test_on_axis_exposure_is_the_good_time_and_bad_column_is_blind() -> None:
    hdu = _expmap(l2_hdulist(Scene(duration=300.0, background_counts=10)))
    data = hdu.data
    # sky pixel (X, Y) = (256, 256) sees detector pixel (127, 127): on axis, not bad.
    assert data[255, 255] == pytest.approx(300.0, rel=1e-4)
    # bad column RAWX 187 lands on sky X = 256.5 + 59.5 = 316 at roll 0; its
    # neighbours 186 and 188 (X = 315, 317) are blind too, 185 and 189 are not.
    assert np.all(data[60:450, 314:316] == 0.0)
    assert np.all(data[140:370, 313] > 0.0) and np.all(data[140:370, 317] > 0.0)
    # 20' off axis along Y: the vignetting V = 1 − 0.1 (20/30)²; detector row 127 + d.
    d = int(round(20.0 / SCALE_ARCMIN))
    theta = np.hypot(127 - 127.5, d - 0.5) * SCALE_ARCMIN
    assert data[255 + d, 255] == pytest.approx(300.0 * float(Vignetting.model()(theta)), rel=1e-4)
    # outside the detector, nothing.
    assert data[10, 10] == 0.0 and data[500, 500] == 0.0


@pytest.mark.parametrize("roll", [0.0, 33.0, 90.0, 217.5])
def test_rotation_conserves_the_exposed_area(roll: float) -> None:
    """Σ map = T · Σ detector weight at any roll: no moiré holes or double counting."""
    data = _expmap(l2_hdulist(Scene(roll=roll, duration=100.0, background_counts=5))).data
    weight = detector_weight(BadPixels.model(), Vignetting.model(), GEOMETRY)
    assert data.sum() == pytest.approx(100.0 * weight.sum(), rel=0.01)
    assert data.max() == pytest.approx(100.0, rel=1e-3)


def test_gtis_and_dead_time_scale_the_map() -> None:
    gtis = ((TSTART, TSTART + 100.0), (TSTART + 200.0, TSTART + 250.0))
    scene = Scene(duration=300.0, gtis=gtis, background_counts=5, header_extra={"LIVETIME": 135.0})
    hdu = _expmap(l2_hdulist(scene))
    # ONTIME is 150 s of GTI; LIVETIME 135 s: 10 % dead time.
    assert hdu.data.max() == pytest.approx(135.0, rel=1e-3)


def test_attitude_with_two_pointings_spreads_the_map() -> None:
    l2 = l2_hdulist(Scene(duration=200.0, background_counts=5))
    att = l2["ATTITUDE"].data
    att["RA"][100:] = 150.0 + 5.0 / 60.0 / np.cos(np.radians(20.0))  # 5' east
    hdu = _expmap(l2)
    assert hdu.header["NPOINT"] == 2
    # only the first pointing covers the west edge; both cover the centre.
    # the centre is 5' off the second pointing's axis: vignetted there.
    second = 100.0 * float(Vignetting.model()(5.0))
    assert hdu.data[255, 255] == pytest.approx(100.0 + second, rel=1e-3)
    west_edge = 380  # X = 381: detector column 252 of the first pointing only
    theta = np.hypot(252 - 127.5, 127 - 127.5) * SCALE_ARCMIN
    expected = 100.0 * float(Vignetting.model()(theta))
    assert hdu.data[255, west_edge] == pytest.approx(expected, rel=1e-3)
    weight = detector_weight(BadPixels.model(), Vignetting.model(), GEOMETRY)
    assert hdu.data.sum() == pytest.approx(200.0 * weight.sum(), rel=0.01)


def test_no_good_time_gives_a_zero_map(tmp_path) -> None:
    scene = Scene(duration=50.0, gtis=((TSTART + 1e5, TSTART + 1e5 + 10),), background_counts=5)
    hdu = _expmap(l2_hdulist(scene))
    assert hdu.data.shape == (512, 512) and not np.any(hdu.data)


def test_product_is_ogip_and_passes_fitsverify(tmp_path) -> None:
    out = BRICK({"l2_events": l2_hdulist(Scene())}, model_calibrations())["expmap"]
    header = out[0].header
    for key, value in {
        "TELESCOP": "SVOM",
        "INSTRUME": "MXT",
        "HDUCLASS": "OGIP",
        "HDUCLAS1": "IMAGE",
        "HDUCLAS2": "EXPOSURE",
        "BUNIT": "s",
        "CTYPE1": "RA---TAN",
        "TIMESYS": "TT",
        "MJDREFI": 57754,
    }.items():
        assert header[key] == value, key
    assert header["CDELT1"] < 0 and header["CRPIX1"] == 256.5
    for key in ("OBS_ID", "DATE", "CREATOR", "EXPOSURE", "TSTART", "TSTOP"):
        assert key in header
    assert "MJDREF" not in header
    errors, report = fitsverify_errors(out, tmp_path / "expmap.fits")
    assert errors == 0, report


def test_bad_inputs_are_named() -> None:
    cal = model_calibrations()
    with pytest.raises(BadInput, match="EVENTS"):
        BRICK({"l2_events": fits.HDUList([fits.PrimaryHDU()])}, cal)
    l2 = l2_hdulist(Scene())
    del l2["EVENTS"].header["RA_PNT"]
    with pytest.raises(BadInput, match="RA_PNT"):
        BRICK({"l2_events": l2}, cal)
    with pytest.raises(BadInput, match="VIGNET"):
        BRICK({"l2_events": l2_hdulist(Scene())}, {"BADPIX": cal["BADPIX"], "TELDEF": GEOMETRY})
    with pytest.raises(BadInput, match="l2_events"):
        BRICK({}, cal)
    with pytest.raises(ValidationError, match="roll_stp"):
        BRICK({"l2_events": l2_hdulist(Scene())}, cal, {"roll_stp": 1.0})


def test_input_is_not_mutated() -> None:
    l2 = l2_hdulist(Scene())
    before = [h.header.tostring() for h in l2]
    x = np.array(l2["EVENTS"].data["X"])
    BRICK({"l2_events": l2}, model_calibrations())
    assert [h.header.tostring() for h in l2] == before
    assert np.array_equal(l2["EVENTS"].data["X"], x)


def test_screened_simulation_with_an_saa_passage() -> None:
    """Simulator → … → screen → exposure: the SAA gap leaves the GTIs, the map follows."""
    from bricks.pipeline import run_bricks
    from bricks.registry import get_brick
    from bricks.simulate import Scene as SimScene
    from bricks.simulate import simulate

    scene = SimScene(ra_pnt=150.0, dec_pnt=20.0, roll=40.0, duration=400.0, saa=[(100, 180)])
    l0, _ = simulate(scene)
    names = ("ingest", "calibrate", "coordinates", "screen", "exposure")
    out = run_bricks([get_brick(n) for n in names], {"l0": l0}, model_calibrations())
    header = out["l2_events"]["EVENTS"].header
    assert header["EXPOSURE"] == pytest.approx(320.0, abs=1.0)
    expmap = out["expmap"][0]
    assert expmap.data.max() == pytest.approx(header["EXPOSURE"], rel=1e-3)
    assert expmap.header["EXPOSURE"] == header["EXPOSURE"]
    # jittered attitude: a few distinct pointings, the area still conserved
    assert expmap.header["NPOINT"] >= 1
    weight = detector_weight(BadPixels.model(), Vignetting.model(), GEOMETRY)
    assert expmap.data.sum() == pytest.approx(header["EXPOSURE"] * weight.sum(), rel=0.01)


@pytest.mark.parametrize("roll", [0.0, 27.0, 301.0])
def test_sampled_map_and_single_pixels_are_the_map_values(roll: float) -> None:
    """``stride`` samples and ``exposure_at`` give the full map's values, bit for bit."""
    from bricks.detect_frame import Pointing
    from bricks.exposure import exposure_at, exposure_on_sky

    calibration = model_calibrations()
    weight = detector_weight(calibration["BADPIX"], calibration["VIGNET"], GEOMETRY)
    rng = np.random.default_rng(int(roll))
    pointings = [
        Pointing(256.5 + rng.normal(0, 2), 256.5 + rng.normal(0, 2), roll + rng.normal(0, 0.1), 7.0)
        for _ in range(5)
    ] + [Pointing(-40.0, 300.0, roll, 3.0)]  # one mostly off the grid
    full = exposure_on_sky(pointings, weight, GEOMETRY)
    for stride in (2, 3, 4):
        rows = np.arange(stride // 2 + 1, 513, stride) - 1
        sampled = exposure_on_sky(pointings, weight, GEOMETRY, stride=stride)
        assert np.array_equal(sampled, full[np.ix_(rows, rows)])
    x, y = rng.integers(1, 513, 5000), rng.integers(1, 513, 5000)
    assert np.array_equal(exposure_at(pointings, weight, GEOMETRY, x, y), full[y - 1, x - 1])
