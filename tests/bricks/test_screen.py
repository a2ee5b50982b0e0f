"""Screen: SAA, occultation, unstable pointing, bad pixels and flares are removed."""

from __future__ import annotations

import numpy as np
import pytest

from bricks.calibrate import BRICK as CALIBRATE
from bricks.coordinates import BRICK as COORDINATES
from bricks.screen import (
    BRICK,
    in_intervals,
    intersect_intervals,
    intervals_from_samples,
    merge_intervals,
    subtract_intervals,
)
from bricks.simulate import ORIGIN_FLARE, Excursion, Flare, Scene, Source, simulate

T0 = 288_000_000.0


def _l2(l0, calibrations, config=None):
    products = {"l0": l0}
    products.update(CALIBRATE(products, calibrations))
    products.update(COORDINATES(products, calibrations))
    products.update(BRICK(products, calibrations, config))
    return products["l1_events"], products["l2_events"]


@pytest.fixture(scope="module")
def eventful_scene() -> Scene:
    return Scene(
        obs_id="eventful",
        trigger_time=T0,
        tstart=T0 + 200.0,
        duration=3000.0,
        sources=[Source(ra=180.02, dec=30.01, flux=1e-9, decay_index=1.2, flux_time_s=200.0)],
        saa=[(500.0, 800.0)],
        occultations=[(1500.0, 1700.0)],
        flares=[Flare(start=2000.0, stop=2060.0, rate=20.0)],
        excursions=[Excursion(start=2500.0, stop=2600.0, offset_arcmin=5.0)],
        seed=9,
    )


@pytest.fixture(scope="module")
def screened(eventful_scene):
    from bricks.calibration import model_calibrations

    l0, truth = simulate(eventful_scene)
    l1, l2 = _l2(l0, model_calibrations())
    return eventful_scene, truth, l1, l2


def test_gtis_exclude_saa_occultation_flare_and_slew(screened):
    scene, _, _, l2 = screened
    gti = np.column_stack([l2["GTI"].data["START"], l2["GTI"].data["STOP"]]) - scene.tstart
    expected = [(0, 500), (800, 1500), (1700, 2000), (2060, 2500), (2600, 3000)]
    assert gti.shape == (5, 2)
    assert np.allclose(gti, expected, atol=10.0)  # the flare edges fall on 10 s bins
    # the HK and attitude edges are exact (1 Hz sample and hold)
    assert gti[0].tolist() == [0, 500] and gti[1].tolist() == [800, 1500]
    assert gti[2, 0] == 1700 and gti[3, 1] == 2500 and gti[4].tolist() == [2600, 3000]
    header = l2["EVENTS"].header
    ontime = float(np.sum(gti[:, 1] - gti[:, 0]))
    assert header["ONTIME"] == pytest.approx(ontime)
    assert header["EXPOSURE"] == pytest.approx(ontime) and header["LIVETIME"] == ontime
    assert l2["GTI"].header["HDUCLAS1"] == "GTI"


def test_screened_events_are_good_and_inside_the_gtis(screened):
    scene, _, l1, l2 = screened
    events = l2["EVENTS"].data
    assert len(events) > 1000
    assert np.all(events["STATUS"] == 0)
    assert np.all(events["PATTERN"] <= 12)
    assert events["PI"].min() >= 20 and events["PI"].max() <= 1000
    gti = np.column_stack([l2["GTI"].data["START"], l2["GTI"].data["STOP"]])
    assert np.all(in_intervals(events["TIME"], gti))
    t = events["TIME"] - scene.tstart
    assert not np.any((t >= 500) & (t < 800))
    assert not np.any((t >= 2000) & (t < 2060))
    # bad pixels were in the L1 list and are gone
    l1_status = l1["EVENTS"].data["STATUS"]
    assert np.any(l1_status & 1) and np.any(l1_status & 2)
    assert not np.any(events["RAWX"] == 187)


def test_the_flare_is_cut_and_the_afterglow_is_not(screened):
    scene, truth, l1, l2 = screened
    assert l2["EVENTS"].header["NFLARES"] >= 1
    l1_time = l1["EVENTS"].data["TIME"] - scene.tstart
    flare_events = truth["origin"] == ORIGIN_FLARE
    assert flare_events.sum() > 1000 and np.all(l1_time[flare_events] < 2060)
    # the bright start of the decaying afterglow is kept
    t = l2["EVENTS"].data["TIME"] - scene.tstart
    assert np.sum(t < 100.0) > 5 * np.sum((t >= 2800.0) & (t < 2900.0))


def test_flare_filter_can_be_switched_off(eventful_scene, calibrations):
    l0, _ = simulate(eventful_scene)
    _, l2 = _l2(l0, calibrations, {"flare_filter": False})
    t = l2["EVENTS"].data["TIME"] - eventful_scene.tstart
    assert np.sum((t >= 2000) & (t < 2060)) > 1000
    assert l2["EVENTS"].header["NFLARES"] == 0


def test_strict_parameters(bright_observation, calibrations):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="flare_bins"):
        _l2(bright_observation[0], calibrations, {"flare_bins": 3})


def test_empty_observation(empty_l0, calibrations):
    _, l2 = _l2(empty_l0, calibrations)
    assert len(l2["EVENTS"].data) == 0
    assert l2["EVENTS"].header["EXPOSURE"] == pytest.approx(50.0)
    assert [h.name for h in l2] == ["PRIMARY", "EVENTS", "GTI", "HK", "ATTITUDE"]


def test_interval_algebra():
    t = np.arange(10.0)
    good = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    assert intervals_from_samples(t, good).tolist() == [[0, 2], [4, 7], [8, 10]]
    a = np.array([[0.0, 5.0], [6.0, 10.0]])
    b = np.array([[3.0, 7.0], [9.0, 12.0]])
    assert intersect_intervals(a, b).tolist() == [[3, 5], [6, 7], [9, 10]]
    assert merge_intervals(np.array([[5.0, 6.0], [0.0, 2.0], [1.0, 3.0], [3.0, 4.0]])).tolist() == [
        [0, 4],
        [5, 6],
    ]
    assert subtract_intervals(a, np.array([[1.0, 2.0], [8.0, 20.0]])).tolist() == [
        [0, 1],
        [2, 5],
        [6, 8],
    ]
    inside = in_intervals(np.array([-1.0, 0.0, 4.99, 5.0, 6.5, 10.0]), a)
    assert inside.tolist() == [False, True, True, False, True, False]


def test_every_level_passes_fitsverify(screened, tmp_path):
    from tests.bricks.localisation_scene import fitsverify_errors

    scene, _, l1, l2 = screened
    l0, _ = simulate(scene)
    for name, hdul in (("l0", l0), ("l1", l1), ("l2", l2)):
        errors, report = fitsverify_errors(hdul, tmp_path / f"{name}.fits")
        assert errors == 0, report


def test_l2_keeps_the_event_wcs_and_units(screened):
    from bricks.wcs import sky_wcs_from_events_header

    _, _, l1, l2 = screened
    events = l2["EVENTS"]
    wcs = sky_wcs_from_events_header(events.header)
    ra, dec = wcs.all_pix2world(events.data["X"], events.data["Y"], 1)
    assert np.allclose(ra, events.data["RA"], atol=1e-5)
    assert np.allclose(dec, events.data["DEC"], atol=1e-5)
    assert events.columns.units == l1["EVENTS"].columns.units
    assert events.columns["PHAS"].format == "9I"
