"""Coordinates: events land where the geometry says, and sources where they are."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from bricks.calibrate import BRICK as CALIBRATE
from bricks.coordinates import BRICK, interpolate_attitude
from bricks.l0 import build_l0
from bricks.simulate import Scene, Source, simulate
from bricks.wcs import radec_to_standard, sky_wcs, sky_wcs_from_events_header

PLATE_SCALE_RAD = 0.075 / 1150.0


def _static_l0(ra: float, dec: float, roll: float, rawx, rawy):
    n = len(rawx)
    tstart = 300_000_000.0
    frame = np.arange(n, dtype=np.int32)
    t = tstart + np.arange(0.0, n * 0.1 + 3.0)
    primary = {
        "OBS_ID": "geom", "PROGRAM": "Calibration", "OBJECT": "geometry", "RA_OBJ": ra,
        "DEC_OBJ": dec, "RA_PNT": ra, "DEC_PNT": dec, "PA_PNT": roll, "TSTART": tstart,
        "TSTOP": t[-1], "DATE-OBS": "2026-07-05", "DATE-END": "2026-07-05", "CREATOR": "test",
    }  # fmt: skip
    columns = np.clip(np.asarray(rawx)[:, None] + np.tile(np.arange(-1, 2), 3), 0, 255)
    phas = (400 * (np.arange(9) == 4) + 100 + (7 * columns) % 11 - 5).astype(np.int16)
    events = {
        "TIME": tstart + (frame + 0.5) * 0.1,
        "FRAME": frame,
        "RAWX": np.asarray(rawx, np.int16),
        "RAWY": np.asarray(rawy, np.int16),
        "PHAS": phas,
    }
    hk = {
        "TIME": t,
        "CCD_TEMP": np.full(t.size, -65.0, np.float32),
        "SAA": np.zeros(t.size, bool),
        "ELV": np.full(t.size, 40.0, np.float32),
    }
    ones = np.ones(t.size)
    attitude = {"TIME": t, "RA": ra * ones, "DEC": dec * ones, "ROLL": roll * ones}
    return build_l0(primary, events, hk, attitude)


def _l1(l0, calibrations):
    cal_events = CALIBRATE({"l0": l0}, calibrations)["cal_events"]
    return BRICK({"cal_events": cal_events}, calibrations)["l1_events"]


@pytest.mark.parametrize(
    ("ra", "dec", "roll"),
    [(150.0, 20.0, 0.0), (150.0, 20.0, 90.0), (0.01, -30.0, 237.0), (45.0, 89.7, 300.0)],
)
def test_pixels_follow_the_interface_geometry(ra, dec, roll, calibrations):
    """Independent of bricks.wcs: astropy offsets by position angle and gnomonic distance."""
    rng = np.random.default_rng(1)
    rawx = rng.integers(1, 255, 40)
    rawy = rng.integers(1, 255, 40)
    events = _l1(_static_l0(ra, dec, roll, rawx, rawy), calibrations)["EVENTS"].data
    a, b = rawx - 127.5, rawy - 127.5
    # +RAWY at position angle ROLL, +RAWX at ROLL − 90°; TAN: distance = arctan(d / f)
    position_angle = roll - np.degrees(np.arctan2(a, b))
    separation = np.degrees(np.arctan(np.hypot(a, b) * PLATE_SCALE_RAD))
    expected = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        position_angle * u.deg, separation * u.deg
    )
    found = SkyCoord(events["RA"] * u.deg, events["DEC"] * u.deg)
    assert found.separation(expected).arcsec.max() < 0.01
    assert np.array_equal(events["DETX"], rawx) and np.array_equal(events["DETY"], rawy)
    x, y = sky_wcs(ra, dec).all_world2pix(events["RA"], events["DEC"], 1)
    assert np.allclose(events["X"], x, atol=1e-3) and np.allclose(events["Y"], y, atol=1e-3)


@pytest.mark.parametrize(
    ("ra_pnt", "dec_pnt", "roll", "source"),
    [
        (150.0, 20.0, 0.0, (150.1, 20.05)),
        (150.0, 20.0, 90.0, (150.1, 20.05)),
        (150.0, 20.0, 237.0, (149.92, 19.9)),
        (0.02, 5.0, 30.0, (359.95, 5.1)),  # source and pointing either side of RA = 0
        (80.0, 89.8, 160.0, (260.0, 89.9)),  # across the pole
    ],
)
def test_simulated_source_comes_out_where_it_is(ra_pnt, dec_pnt, roll, source, calibrations):
    scene = Scene(
        ra_pnt=ra_pnt,
        dec_pnt=dec_pnt,
        roll=roll,
        duration=500.0,
        sources=[Source(ra=source[0], dec=source[1], flux=3e-9)],
        seed=17,
    )
    l0, truth = simulate(scene)
    events = _l1(l0, calibrations)["EVENTS"].data
    mine = (truth["origin"] == 0) & (events["STATUS"] == 0)
    xi, eta = radec_to_standard(events["RA"][mine], events["DEC"][mine], *source)
    core = np.degrees(np.hypot(xi, eta)) * 60.0 < 4.0  # a symmetric window about the truth
    assert core.sum() > 2000
    offset_arcsec = np.degrees(np.hypot(xi[core].mean(), eta[core].mean())) * 3600.0
    assert offset_arcsec < 5.0


def test_attitude_interpolation_across_ra_zero_and_roll_wrap(bright_observation, calibrations):
    l1 = _l1(bright_observation[0], calibrations)
    attitude = l1["ATTITUDE"].copy()
    odd = np.arange(len(attitude.data)) % 2 == 1
    attitude.data["RA"][:] = np.where(odd, 0.001, 359.999)
    attitude.data["DEC"][:] = 0.0
    attitude.data["ROLL"][:] = np.where(odd, 1.0, 359.0)
    t = attitude.data["TIME"]
    ra, dec, roll = interpolate_attitude(attitude, np.array([0.5 * (t[0] + t[1])]), 0.0, 0.0)
    assert min(ra[0], 360.0 - ra[0]) < 1e-6 and abs(dec[0]) < 1e-6
    assert roll[0] % 360.0 == pytest.approx(0.0, abs=1e-9) or roll[0] % 360 == pytest.approx(360)


def test_l1_header_carries_the_event_wcs(bright_observation, calibrations):
    l1 = _l1(bright_observation[0], calibrations)
    header = l1["EVENTS"].header
    names = l1["EVENTS"].columns.names
    nx = names.index("X") + 1
    assert header[f"TCTYP{nx}"] == "RA---TAN" and header[f"TCDLT{nx}"] < 0
    assert header[f"TCRPX{nx}"] == 256.5 and header[f"TCRVL{nx}"] == header["RA_PNT"]
    wcs = sky_wcs_from_events_header(header)
    data = l1["EVENTS"].data
    ra, dec = wcs.all_pix2world(data["X"], data["Y"], 1)
    assert np.allclose(ra, data["RA"], atol=1e-5) and np.allclose(dec, data["DEC"], atol=1e-5)
    assert [h.name for h in l1] == ["PRIMARY", "EVENTS", "HK", "ATTITUDE"]


def test_empty_observation(empty_l0, calibrations):
    l1 = _l1(empty_l0, calibrations)
    assert len(l1["EVENTS"].data) == 0 and "RA" in l1["EVENTS"].columns.names
