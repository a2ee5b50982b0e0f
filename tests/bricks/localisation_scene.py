"""Synthetic L2 event files for the exposure, detect and notice tests.

Photons are drawn through the model calibration the way the instrument sees them:
source offsets from ``Psf.sample`` along the detector axes, thinned by vignetting, lost
on bad pixels and off the transmitted detector, quantised to detector pixel centres,
then projected to the sky grid with the roll (L0_FORMAT.md orientation). The particle
background is flat over the detector. The attitude is one row per second.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from bricks.calibration import BadPixels, Geometry, Psf, Vignetting
from bricks.wcs import (
    detector_to_sky_offsets,
    event_wcs_keywords,
    sky_pixels,
    sky_to_detector_offsets,
    sky_to_radec,
)

TSTART = 300_000_000.0


@dataclass(frozen=True)
class SceneSource:
    """A point source: position in degrees and expected on-axis counts (whole PSF)."""

    ra: float
    dec: float
    counts: float


@dataclass(frozen=True)
class Scene:
    """A synthetic observation: sources, pointing (deg), roll (deg), seconds, seed."""

    sources: tuple[SceneSource, ...] = ()
    ra_pnt: float = 150.0
    dec_pnt: float = 20.0
    roll: float = 0.0
    duration: float = 300.0
    background_counts: float = 200.0
    seed: int = 1
    gtis: tuple[tuple[float, float], ...] | None = None
    header_extra: dict = field(default_factory=dict)


def draw_events(scene: Scene) -> dict[str, np.ndarray]:
    """Event columns (TIME, RAWX, RAWY, X, Y, RA, DEC, PI) of a scene."""
    rng = np.random.default_rng(scene.seed)
    geometry, psf = Geometry.model(), Psf.model()
    vignetting, bad = Vignetting.model(), BadPixels.model().mask()
    scale = geometry.plate_scale_arcsec / 60.0
    det_x, det_y = [], []
    for src in scene.sources:
        n = rng.poisson(src.counts)
        sx, sy = sky_pixels(np.array([src.ra]), np.array([src.dec]), scene.ra_pnt, scene.dec_pnt)
        ox, oy = sky_to_detector_offsets(sx[0] - 256.5, sy[0] - 256.5, scene.roll)
        theta = np.hypot(ox, oy) * scale
        n = rng.binomial(n, float(vignetting(theta)))
        dx, dy = psf.sample(rng, n)
        det_x.append(geometry.axis_x + ox + dx / scale)
        det_y.append(geometry.axis_y + oy + dy / scale)
    nb = rng.poisson(scene.background_counts)
    det_x.append(rng.uniform(-0.5, 255.5, nb))
    det_y.append(rng.uniform(-0.5, 255.5, nb))
    fx, fy = np.concatenate(det_x), np.concatenate(det_y)
    rawx = np.floor(fx + 0.5).astype(np.int64)
    rawy = np.floor(fy + 0.5).astype(np.int64)
    ok = (rawx >= 1) & (rawx <= 254) & (rawy >= 1) & (rawy <= 254)
    rawx, rawy = rawx[ok], rawy[ok]
    ok = ~bad[rawy, rawx]
    rawx, rawy = rawx[ok], rawy[ok]
    X, Y = detector_to_sky_offsets(rawx - geometry.axis_x, rawy - geometry.axis_y, scene.roll)
    X, Y = X + 256.5, Y + 256.5
    ra, dec = sky_to_radec(X, Y, scene.ra_pnt, scene.dec_pnt)
    time = np.sort(rng.uniform(TSTART, TSTART + scene.duration, len(X)))
    order = rng.permutation(len(X))
    return {
        "TIME": time,
        "RAWX": rawx[order],
        "RAWY": rawy[order],
        "X": X[order],
        "Y": Y[order],
        "RA": ra[order],
        "DEC": dec[order],
        "PI": rng.integers(30, 800, len(X)),
    }


def l2_hdulist(scene: Scene, columns: dict[str, np.ndarray] | None = None) -> fits.HDUList:
    """An L2 file of the scene: EVENTS (with the sky WCS), GTI and ATTITUDE."""
    cols = draw_events(scene) if columns is None else columns
    events = fits.BinTableHDU.from_columns(
        [
            fits.Column("TIME", "D", unit="s", array=cols["TIME"]),
            fits.Column("RAWX", "I", unit="pixel", array=cols["RAWX"]),
            fits.Column("RAWY", "I", unit="pixel", array=cols["RAWY"]),
            fits.Column("X", "E", unit="pixel", array=cols["X"]),
            fits.Column("Y", "E", unit="pixel", array=cols["Y"]),
            fits.Column("RA", "D", unit="deg", array=cols["RA"]),
            fits.Column("DEC", "D", unit="deg", array=cols["DEC"]),
            fits.Column("PI", "J", array=cols["PI"]),
        ],
        name="EVENTS",
    )
    gtis = scene.gtis or ((TSTART, TSTART + scene.duration),)
    ontime = float(sum(b - a for a, b in gtis))
    header = events.header
    header.update(event_wcs_keywords(scene.ra_pnt, scene.dec_pnt, 4, 5))
    header.update(
        {
            "TELESCOP": "SVOM",
            "INSTRUME": "MXT",
            "OBS_ID": "sb26022501_01",
            "OBJECT": "GRB 260225A",
            "RA_PNT": scene.ra_pnt,
            "DEC_PNT": scene.dec_pnt,
            "PA_PNT": scene.roll,
            "RA_OBJ": scene.sources[0].ra if scene.sources else scene.ra_pnt,
            "DEC_OBJ": scene.sources[0].dec if scene.sources else scene.dec_pnt,
            "TSTART": TSTART,
            "TSTOP": TSTART + scene.duration,
            "TIMESYS": "TT",
            "MJDREFI": 57754,
            "MJDREFF": 0.0,
            "TIMEUNIT": "s",
            "ONTIME": ontime,
            "LIVETIME": ontime,
            "EXPOSURE": ontime,
            "TRIGTIME": TSTART - 120.0,
            "BURST_ID": "sb26022501",
        }
    )
    header.update(scene.header_extra)
    gti = fits.BinTableHDU.from_columns(
        [
            fits.Column("START", "D", unit="s", array=[a for a, _ in gtis]),
            fits.Column("STOP", "D", unit="s", array=[b for _, b in gtis]),
        ],
        name="GTI",
    )
    t = TSTART + 0.5 + np.arange(int(scene.duration))
    attitude = fits.BinTableHDU.from_columns(
        [
            fits.Column("TIME", "D", unit="s", array=t),
            fits.Column("RA", "D", unit="deg", array=np.full(len(t), scene.ra_pnt)),
            fits.Column("DEC", "D", unit="deg", array=np.full(len(t), scene.dec_pnt)),
            fits.Column("ROLL", "D", unit="deg", array=np.full(len(t), scene.roll)),
        ],
        name="ATTITUDE",
    )
    return fits.HDUList([fits.PrimaryHDU(), events, gti, attitude])


def fitsverify_errors(hdul: fits.HDUList, path: Path) -> tuple[int, str]:
    """Write ``hdul`` to ``path``, run ``fitsverify`` on it: (number of errors, report)."""
    hdul.writeto(path, overwrite=True)
    done = subprocess.run(
        ["fitsverify", "-q", "-e", str(path)], capture_output=True, text=True, check=False
    )
    report = done.stdout + done.stderr
    found = re.search(r"(\d+) error", report)
    errors = int(found.group(1)) if found else (0 if done.returncode == 0 else 1)
    return errors, report
