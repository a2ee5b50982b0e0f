"""Synthetic L2 event lists with a known truth, for the product bricks' tests.

A decaying point source (PSF, vignetting, absorbed-free power-law spectrum through the
model effective area and resolution) plus a flat particle background, on the live
detector only (edges and bad column removed), inside given good time intervals.
Everything is drawn from the model CALDB, independently of the bricks' own code paths
for regions and responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from bricks.calibration import model_calibrations
from bricks.wcs import SKY_REF_PIX, event_wcs_keywords, sky_to_radec

RA_PNT, DEC_PNT = 150.0, -30.0


@dataclass
class Scene:
    """What to draw. Times are seconds after TSTART; rates in counts/s."""

    source_counts: float = 3000.0  # expected detected source counts in [tstart, tstop]
    alpha: float = 1.2
    trigger_before_s: float = 200.0  # TRIGTIME = TSTART - this
    duration_s: float = 4000.0
    gamma: float = 2.0
    bkg_rate: float = 0.3  # counts/s over the detector
    offset_pix: tuple[float, float] = (10.0, -6.0)  # source sky offset from the pointing
    roll_deg: float = 30.0
    gtis: list[tuple[float, float]] = field(
        default_factory=lambda: [(0.0, 1500.0), (2000.0, 4000.0)]
    )
    tstart: float = 3.0e8
    seed: int = 1


def _decay_times(rng: np.random.Generator, n: int, u1: float, u2: float, alpha: float):
    """Draw ``n`` values of u = t - t0 with density u**-alpha on [u1, u2]."""
    k = 1.0 - alpha
    return (u1**k + rng.random(n) * (u2**k - u1**k)) ** (1.0 / k)


def _in_gti(times: np.ndarray, gtis: np.ndarray) -> np.ndarray:
    return ((times[:, None] >= gtis[None, :, 0]) & (times[:, None] < gtis[None, :, 1])).any(1)


def _photon_pi(rng: np.random.Generator, n: int, gamma: float, calib: dict) -> np.ndarray:
    grid = np.linspace(0.2, 10.0, 5000)
    density = grid**-gamma * calib["SPECRESP"](grid)
    cdf = np.cumsum(density)
    energy_kev = np.interp(rng.random(n) * cdf[-1], cdf, grid)
    sigma = calib["RESOL"].fwhm_ev(energy_kev * 1000.0) / 2.355
    measured = energy_kev * 1000.0 + rng.normal(0.0, 1.0, n) * sigma
    return np.clip(np.floor(measured / 10.0), 0, 1023).astype(np.int32)


def _sky_from_detector(dx_pix, dy_pix, roll_deg):
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    return dx_pix * c - dy_pix * s, dx_pix * s + dy_pix * c


def _detector_from_sky(dx_sky, dy_sky, roll_deg):
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    return dx_sky * c + dy_sky * s, -dx_sky * s + dy_sky * c


def make_l2(scene: Scene) -> tuple[fits.HDUList, dict]:
    """An L2 event list HDUList (EVENTS, GTI) and the truth it was drawn from."""
    rng = np.random.default_rng(scene.seed)
    calib = model_calibrations()
    geometry = calib["TELDEF"]
    scale_arcmin = geometry.plate_scale_arcsec / 60.0
    gtis = scene.tstart + np.array(scene.gtis, dtype=np.float64)
    t0 = scene.tstart - scene.trigger_before_s
    tstop = scene.tstart + scene.duration_s
    src_x = SKY_REF_PIX + scene.offset_pix[0]
    src_y = SKY_REF_PIX + scene.offset_pix[1]
    src_dx, src_dy = _detector_from_sky(*scene.offset_pix, scene.roll_deg)
    theta = np.hypot(src_dx, src_dy) * scale_arcmin
    vignetting = float(calib["VIGNET"](theta))

    # Source: draw over the whole observation, keep what falls in GTIs, on the detector.
    n_total = rng.poisson(scene.source_counts * vignetting)
    u = _decay_times(rng, n_total, scene.trigger_before_s, tstop - t0, scene.alpha)
    src_t = t0 + u
    ddx, ddy = calib["PSF"].sample(rng, n_total)
    src_rawx = geometry.axis_x + src_dx + ddx / scale_arcmin
    src_rawy = geometry.axis_y + src_dy + ddy / scale_arcmin
    src_pi = _photon_pi(rng, n_total, scene.gamma, calib)

    # Background: flat over the detector and in time.
    span = scene.duration_s
    n_bkg = rng.poisson(scene.bkg_rate * span)
    bkg_t = scene.tstart + rng.random(n_bkg) * span
    bkg_rawx = rng.uniform(0.5, 254.5, n_bkg)
    bkg_rawy = rng.uniform(0.5, 254.5, n_bkg)
    bkg_pi = rng.integers(20, 1001, n_bkg).astype(np.int32)

    t = np.concatenate([src_t, bkg_t])
    rawx = np.concatenate([src_rawx, bkg_rawx])
    rawy = np.concatenate([src_rawy, bkg_rawy])
    pi = np.concatenate([src_pi, bkg_pi])
    is_src = np.arange(t.size) < n_total
    ix = np.floor(rawx + 0.5)
    keep = (ix >= 1) & (ix <= 254) & (np.floor(rawy + 0.5) >= 1) & (np.floor(rawy + 0.5) <= 254)
    keep &= ix != 187
    keep &= _in_gti(t, gtis) & (pi >= 20) & (pi <= 1000)
    order = np.argsort(t[keep], kind="stable")
    t, rawx, rawy, pi, is_src = (a[keep][order] for a in (t, rawx, rawy, pi, is_src))
    sx, sy = _sky_from_detector(rawx - geometry.axis_x, rawy - geometry.axis_y, scene.roll_deg)
    x, y = SKY_REF_PIX + sx, SKY_REF_PIX + sy
    ra, dec = sky_to_radec(x, y, RA_PNT, DEC_PNT)

    columns = [
        fits.Column("TIME", "D", unit="s", array=t),
        fits.Column("RAWX", "I", unit="pixel", array=np.floor(rawx + 0.5).astype(np.int16)),
        fits.Column("RAWY", "I", unit="pixel", array=np.floor(rawy + 0.5).astype(np.int16)),
        fits.Column("PI", "J", array=pi),
        fits.Column("ENERGY", "E", unit="eV", array=pi * 10.0 + 5.0),
        fits.Column("X", "E", unit="pixel", array=x.astype(np.float32)),
        fits.Column("Y", "E", unit="pixel", array=y.astype(np.float32)),
        fits.Column("RA", "D", unit="deg", array=ra),
        fits.Column("DEC", "D", unit="deg", array=dec),
    ]
    events = fits.BinTableHDU.from_columns(columns, name="EVENTS")
    h = events.header
    exposure = float(np.sum(gtis[:, 1] - gtis[:, 0]))
    for key, value in {
        "TELESCOP": "SVOM",
        "INSTRUME": "MXT",
        "OBS_ID": "synthetic01",
        "OBJECT": "GRB TEST",
        "RA_PNT": RA_PNT,
        "DEC_PNT": DEC_PNT,
        "PA_PNT": scene.roll_deg,
        "TSTART": scene.tstart,
        "TSTOP": tstop,
        "TRIGTIME": t0,
        "TIMESYS": "TT",
        "MJDREFI": 57754,
        "MJDREFF": 0.0,
        "TIMEUNIT": "s",
        "ONTIME": exposure,
        "LIVETIME": exposure,
        "EXPOSURE": exposure,
        **event_wcs_keywords(RA_PNT, DEC_PNT, 6, 7),
    }.items():
        h[key] = value
    gti = fits.BinTableHDU.from_columns(
        [
            fits.Column("START", "D", unit="s", array=gtis[:, 0]),
            fits.Column("STOP", "D", unit="s", array=gtis[:, 1]),
        ],
        name="GTI",
    )
    gti.header["HDUCLASS"] = "OGIP"
    gti.header["HDUCLAS1"] = "GTI"
    truth = {
        "x": src_x,
        "y": src_y,
        "t0": t0,
        "alpha": scene.alpha,
        "gamma": scene.gamma,
        "vignetting": vignetting,
        "source_events": int(is_src.sum()),
        "ra": float(sky_to_radec(src_x, src_y, RA_PNT, DEC_PNT)[0]),
        "dec": float(sky_to_radec(src_x, src_y, RA_PNT, DEC_PNT)[1]),
        "expected_counts": scene.source_counts,
    }
    return fits.HDUList([fits.PrimaryHDU(), events, gti]), truth


def position_of(truth: dict) -> dict:
    """A ``position`` product at the true source position."""
    return {
        "status": "detected",
        "ra": truth["ra"],
        "dec": truth["dec"],
        "x": truth["x"],
        "y": truth["y"],
        "err90_arcsec": 30.0,
        "err90_stat_arcsec": 15.0,
        "counts": 100,
        "snr": 10.0,
    }
