"""Calibrate: lines come back at their energy, patterns and flags are right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits

from bricks.calibrate import (
    BRICK,
    PATTERN_INVALID,
    STATUS_BAD_COLUMN,
    STATUS_HOT_PIXEL,
    STATUS_INVALID_EVENT,
    STATUS_NEIGHBOUR_OF_BAD,
    STATUS_OUTSIDE_WINDOW,
    classify_patterns,
)
from bricks.calibration import Gain, Pedestal
from bricks.errors import BadInput
from bricks.l0 import build_l0
from bricks.simulate import ORIGIN_COLUMN, ORIGIN_HOT, Scene, Source, simulate
from bricks.timeutil import mission_seconds


@pytest.fixture(scope="module")
def line_observation():
    """Two narrow lines (6.4 and 1.5 keV), 6 years after the CTI epoch, CCD warming 10 °C."""
    scene = Scene(
        obs_id="lines",
        tstart=mission_seconds("2030-06-01T00:00:00"),
        duration=3000.0,
        temp_start_c=-68.0,
        temp_drift_c=10.0,
        sources=[
            Source(ra=180.1, dec=30.1, flux=0.0, line_energy_kev=6.4, line_flux=0.5),
            Source(ra=179.9, dec=29.9, flux=0.0, line_energy_kev=1.5, line_flux=0.06),
        ],
        seed=21,
    )
    return simulate(scene)


def _line_centre_ev(events, truth, index: int, energy_ev: float) -> tuple[float, int]:
    near = np.abs(events["PI"] * 10.0 + 5.0 - energy_ev) < 300.0
    chosen = (truth["origin"] == index) & (events["STATUS"] == 0) & near
    return float(np.mean(events["PI"][chosen] * 10.0 + 5.0)), int(chosen.sum())


@pytest.mark.parametrize(("index", "energy_ev"), [(0, 6400.0), (1, 1500.0)])
def test_lines_come_back_at_their_energy(line_observation, calibrations, index, energy_ev):
    l0, truth = line_observation
    events = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data
    centre, n = _line_centre_ev(events, truth, index, energy_ev)
    assert n > 1500
    assert centre == pytest.approx(energy_ev, abs=20.0)
    # and the corrections matter: ignoring the temperature dependence misplaces the line
    flat = {**calibrations, "GAIN": dataclasses.replace(calibrations["GAIN"], temp_coeff=0.0)}
    uncorrected = BRICK({"l0": l0}, flat)["cal_events"]["EVENTS"].data
    centre_flat, _ = _line_centre_ev(uncorrected, truth, index, energy_ev)
    assert abs(centre_flat - energy_ev) > abs(centre - energy_ev) + 3.0


def test_cti_correction_removes_the_row_dependence(line_observation, calibrations):
    l0, truth = line_observation
    events = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data
    line = (truth["origin"] == 0) & (events["STATUS"] == 0) & (events["PATTERN"] == 0)
    line &= np.abs(events["ENERGY"] - 6400.0) < 300.0
    slope = np.polyfit(events["RAWY"][line], events["ENERGY"][line], 1)[0]
    # uncorrected, 1.3e-5 per transfer costs 6400 eV × 1.3e-5 = 0.08 eV per row
    assert abs(slope) < 0.03


def test_resolution_of_singles_follows_the_model(calibrations):
    # a point-like charge cloud: no charge lost below the split threshold at pixel edges,
    # so the line width is read noise and Fano noise alone (Resolution.fwhm_ev)
    scene = Scene(
        duration=2000.0,
        charge_cloud_sigma_pix=0.005,
        sources=[Source(ra=180.0, dec=30.0, flux=0.0, line_energy_kev=1.5, line_flux=0.06)],
        seed=8,
    )
    l0, truth = simulate(scene)
    events = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data
    singles = (truth["origin"] == 0) & (events["STATUS"] == 0) & (events["PATTERN"] == 0)
    energy = events["ENERGY"][singles & (np.abs(events["ENERGY"] - 1500.0) < 300.0)]
    assert energy.size > 3000
    fwhm = 2.3548 * np.std(energy)
    assert fwhm == pytest.approx(calibrations["RESOL"].fwhm_ev(1500.0), rel=0.05)


def test_pattern_distribution_is_plausible(line_observation, calibrations):
    l0, truth = line_observation
    events = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data
    pattern = events["PATTERN"][truth["origin"] == 1]
    share = np.bincount(pattern, minlength=14) / pattern.size
    assert 0.5 < share[0] < 0.8  # singles
    assert 0.15 < share[1:5].sum() < 0.45  # doubles, evenly oriented
    assert share[1:5].min() > 0.6 * share[1:5].max()
    assert 0.005 < share[5:13].sum() < 0.1  # triples and quads
    assert share[PATTERN_INVALID] < 0.03


def _island(values: dict[int, float], centre: float = 1000.0) -> np.ndarray:
    pixels = np.zeros(9)
    pixels[4] = centre
    for index, value in values.items():
        pixels[index] = value
    return pixels


# PHAS index 3·(dy+1) + (dx+1): up (0,+1) = 7, right (+1,0) = 5, down = 1, left = 3
HAND_MADE = [
    ({}, 0),
    ({7: 200}, 1),
    ({5: 200}, 2),
    ({1: 200}, 3),
    ({3: 200}, 4),
    ({7: 200, 5: 150}, 5),
    ({5: 200, 1: 150}, 6),
    ({1: 200, 3: 150}, 7),
    ({3: 200, 7: 150}, 8),
    ({7: 200, 5: 150, 8: 100}, 9),
    ({5: 200, 1: 150, 2: 100}, 10),
    ({1: 200, 3: 150, 0: 100}, 11),
    ({3: 200, 7: 150, 6: 100}, 12),
    ({7: 59.9, 8: 59.9}, 0),  # below the split threshold
    ({8: 200}, 13),  # a diagonal alone
    ({3: 200, 5: 200}, 13),  # opposite sides
    ({7: 200, 5: 150, 2: 100}, 13),  # L with the wrong corner
    ({7: 200, 5: 150, 8: 100, 3: 90}, 13),  # more than a square
    ({5: 1200}, 13),  # a neighbour above the centre
]


@pytest.mark.parametrize(("neighbours", "expected"), HAND_MADE)
def test_hand_made_patterns(neighbours, expected):
    assert classify_patterns(_island(neighbours)[None, :], 60.0)[0] == expected


def _hand_made_l0(rawx, rawy, phas_ev, temp_c=-65.0):
    """An L0 whose events carry given 3 × 3 pixel energies (eV) at −65 °C, no CTI epoch drift."""
    n = len(rawx)
    tstart = mission_seconds("2024-06-22T00:00:00")
    frame = np.arange(n, dtype=np.int32)
    rawx = np.asarray(rawx, dtype=np.int16)
    columns = np.clip(rawx[:, None] + np.tile(np.arange(-1, 2), 3), 0, 255)
    phas = np.rint(np.asarray(phas_ev) / 2.5 + Pedestal.model().adu[columns]).astype(np.int16)
    hk_time = tstart + np.arange(0.0, n * 0.1 + 2.0)
    primary = {
        "OBS_ID": "hand", "PROGRAM": "Calibration", "OBJECT": "bench", "RA_OBJ": 1.0,
        "DEC_OBJ": 1.0, "RA_PNT": 1.0, "DEC_PNT": 1.0, "PA_PNT": 0.0, "TSTART": tstart,
        "TSTOP": hk_time[-1], "DATE-OBS": "2024-06-22T00:00:00", "DATE-END": "2024-06-22",
        "CREATOR": "test",
    }  # fmt: skip
    events = {
        "TIME": tstart + (frame + 0.5) * 0.1,
        "FRAME": frame,
        "RAWX": rawx,
        "RAWY": np.asarray(rawy, dtype=np.int16),
        "PHAS": phas,
    }
    hk = {
        "TIME": hk_time,
        "CCD_TEMP": np.full(hk_time.size, temp_c, np.float32),
        "SAA": np.zeros(hk_time.size, bool),
        "ELV": np.full(hk_time.size, 40.0, np.float32),
    }
    ones = np.ones(hk_time.size)
    attitude = {"TIME": hk_time, "RA": ones, "DEC": ones, "ROLL": 0 * ones}
    return build_l0(primary, events, hk, attitude)


def test_flags_for_bad_pixels_and_the_window(calibrations):
    cases = [
        ((17, 201), STATUS_HOT_PIXEL),
        ((187, 40), STATUS_BAD_COLUMN),
        ((186, 40), STATUS_NEIGHBOUR_OF_BAD),
        ((188, 3), STATUS_NEIGHBOUR_OF_BAD),
        ((16, 200), STATUS_NEIGHBOUR_OF_BAD),
        ((0, 100), STATUS_OUTSIDE_WINDOW),
        ((100, 255), STATUS_OUTSIDE_WINDOW),
        ((120, 120), 0),
    ]
    l0 = _hand_made_l0(
        [xy[0] for xy, _ in cases], [xy[1] for xy, _ in cases], [_island({})] * len(cases)
    )
    status = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data["STATUS"]
    assert list(status) == [flag for _, flag in cases]


def test_energy_pha_and_thresholds_on_hand_made_events(calibrations):
    islands = [_island({}), _island({7: 300.0, 0: 40.0}), _island({}, centre=140.0)]
    l0 = _hand_made_l0([50, 60, 70], [0 + 1, 1, 1], islands)
    events = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data
    # row 1: two transfers, CTI 1e-5 at the epoch: negligible next to the 2.5 eV ADU step
    assert events["ENERGY"][0] == pytest.approx(1000.0, abs=2.5)
    assert events["ENERGY"][1] == pytest.approx(1300.0, abs=4.0)  # the 40 eV corner is dropped
    assert list(events["PI"][:2]) == [
        int(events["ENERGY"][0] // 10),
        int(events["ENERGY"][1] // 10),
    ]
    assert events["PHA"][1] == pytest.approx(1300.0 / 2.5, abs=2)
    assert list(events["PATTERN"][:2]) == [0, 1]
    assert events["STATUS"][2] == STATUS_INVALID_EVENT  # centre below the event threshold
    assert list(events["STATUS"][:2]) == [0, 0]


def test_simulated_bad_pixel_events_are_all_flagged(bright_observation, calibrations):
    l0, truth = bright_observation
    status = BRICK({"l0": l0}, calibrations)["cal_events"]["EVENTS"].data["STATUS"]
    assert np.all(status[truth["origin"] == ORIGIN_HOT] & STATUS_HOT_PIXEL)
    assert np.all(status[truth["origin"] == ORIGIN_COLUMN] & STATUS_BAD_COLUMN)


def test_output_layout_and_input_untouched(bright_observation, calibrations):
    l0 = bright_observation[0]
    before = l0["EVENTS"].data["PHAS"].copy()
    header_before = l0["EVENTS"].header.tostring()
    out = BRICK({"l0": l0}, calibrations)["cal_events"]
    assert np.array_equal(l0["EVENTS"].data["PHAS"], before)
    assert l0["EVENTS"].header.tostring() == header_before
    assert [h.name for h in out] == ["PRIMARY", "EVENTS", "HK", "ATTITUDE"]
    header = out["EVENTS"].header
    assert out["EVENTS"].columns.names == [
        "TIME", "FRAME", "RAWX", "RAWY", "PHAS", "PHA", "PI", "ENERGY", "PATTERN", "STATUS",
    ]  # fmt: skip
    for key in ("RA_PNT", "DEC_PNT", "PA_PNT", "OBJECT", "OBS_ID", "TSTART", "MJDREFI"):
        assert key in header, key
    assert header["TLMAX7"] == 1023 and header["HDUCLAS1"] == "EVENTS"
    assert out[0].header["CREATOR"].startswith("mxt-calibrate")


def test_empty_observation(empty_l0, calibrations):
    out = BRICK({"l0": empty_l0}, calibrations)["cal_events"]
    assert len(out["EVENTS"].data) == 0
    assert "PI" in out["EVENTS"].columns.names


def test_missing_calibration_is_named(bright_observation, calibrations):
    del calibrations["CTI"]
    with pytest.raises(BadInput, match="needs CALDB CTI"):
        BRICK({"l0": bright_observation[0]}, calibrations)
    calibrations["CTI"] = Gain.model()
    with pytest.raises(BadInput, match="CALDB CTI is a Gain"):
        BRICK({"l0": bright_observation[0]}, calibrations)


def test_output_is_valid_fits(bright_observation, calibrations, tmp_path):
    out = BRICK({"l0": bright_observation[0]}, calibrations)["cal_events"]
    out.writeto(tmp_path / "cal.fits")
    with fits.open(tmp_path / "cal.fits") as hdul:
        hdul.verify("exception")


def test_row_sums_equal_numpy_row_sums():
    """calibrate._row_sums adds in numpy's order: identical to .sum(axis=1), rounding included."""
    from bricks.calibrate import _row_sums

    rng = np.random.default_rng(0)
    values = rng.standard_normal((20_000, 9)) * 10.0 ** rng.integers(-8, 8, (20_000, 9))
    values = values.astype(np.float32).astype(np.float64)
    assert np.array_equal(_row_sums(values), values.sum(axis=1))


def test_classify_patterns_equals_the_mask_table():
    """PATTERN of random pixel energies: the pattern of each neighbour mask, 13 off-peak."""
    from bricks.calibrate import _NEIGHBOURS, PATTERN_TABLE, classify_patterns

    rng = np.random.default_rng(1)
    pixel_ev = rng.normal(0.0, 80.0, (5_000, 9)).astype(np.float32)
    pixel_ev[:, 4] += rng.uniform(0.0, 400.0, 5_000).astype(np.float32)
    split = 60.0
    above = pixel_ev[:, _NEIGHBOURS] >= split
    code = (above * (1 << np.arange(8))).sum(axis=1)
    expected = np.where(
        (pixel_ev[:, _NEIGHBOURS] > pixel_ev[:, 4:5]).any(axis=1), 13, PATTERN_TABLE[code]
    )
    assert np.array_equal(classify_patterns(pixel_ev, split), expected)
