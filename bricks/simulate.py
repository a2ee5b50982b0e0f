"""Observation simulator: a scene in, an L0 HDUList (and its truth) out.

Every instrument step is the inverse of what the bricks correct, through the same
calibration objects (bricks/calibration.py):

1. photon arrival times from each source's light curve F(t) ∝ (t − T0)^−α;
2. photon energies from an absorbed power law × effective area (plus an optional
   Gaussian line). Photo-electric absorption uses the simple cross-section
   σ(E) = 2.4e-22 cm² · (E / 1 keV)^−8/3 per hydrogen atom, so the optical depth is
   τ(E) = 2.4 · NH[1e22 cm⁻²] · E[keV]^−8/3 (a fair match to Morrison & McCammon
   1983 in 0.3–10 keV, without edges);
3. the true pointing (recorded attitude with jitter, plus an optional boresight
   error) projects the source onto the detector (gnomonic, ROLL orientation);
4. PSF offsets (Psf.sample) are added and vignetting thins the photons;
5. energy resolution: Fano noise on the charge, then the charge cloud (a Gaussian
   of ``charge_cloud_sigma_pix``) splits between the 3 × 3 pixels according to where
   it lands in the pixel, giving EPIC-pn-like singles, doubles, triples and quads;
6. CTI loss (1 − c(t))^(row + 1) per pixel row, read noise per pixel, gain with the
   temperature at the event time (eV → ADU), the column's pedestal, rounding;
7. 0.1 s frames (TIME is the frame mid-point), events inside the SAA removed, events
   outside RAWX/RAWY 1–254 not transmitted, rows sorted by TIME.

Background: particles (flat on the detector and in 0.2–10 keV, not vignetted,
present during Earth occultation), diffuse sky (vignetted, soft: a Γ = 2 power law
through the effective area, absent during occultation), hot-pixel and bad-column
events at the bad pixels of the BADPIX calibration, and optional flares (extra
particle rate in given intervals).

Deterministic for a seed: one ``numpy.random.Generator`` drawn in a fixed order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import ndtr

from bricks.calibration import (
    BadPixels,
    Cti,
    EffectiveArea,
    Gain,
    Geometry,
    Pedestal,
    Resolution,
    model_calibrations,
)
from bricks.l0 import FRAME_TIME_S, RAW_MAX, RAW_MIN, build_l0
from bricks.timeutil import iso_from_mission, mission_seconds
from bricks.wcs import radec_to_standard, standard_to_detector, standard_to_radec

KEV_TO_ERG = 1.602176634e-9
SIGMA_1KEV_PER_1E22 = 2.4  # optical depth at 1 keV for NH = 1e22 cm⁻²
BAND_KEV = (0.2, 10.0)
FLUX_BAND_KEV = (0.3, 10.0)
ENERGY_GRID_KEV = np.geomspace(BAND_KEV[0], BAND_KEV[1], 4096)
CHUNK_EVENTS = 1 << 20  # PHAS are built in chunks to bound memory at 10⁷ events
ORIGIN_PARTICLE, ORIGIN_SKY, ORIGIN_HOT, ORIGIN_COLUMN, ORIGIN_FLARE = -1, -2, -3, -4, -5
BORESIGHT_90_ARCSEC = 25.0
# Rayleigh 90 % radius = σ·sqrt(2 ln 10): the per-axis σ of a 25″ (90 %) systematic
BORESIGHT_SIGMA_ARCSEC = BORESIGHT_90_ARCSEC / np.sqrt(2.0 * np.log(10.0))

Interval = tuple[float, float]


class Source(BaseModel):
    """A point source: position, absorbed power-law spectrum, light curve, optional line."""

    model_config = ConfigDict(extra="forbid")

    ra: float = Field(ge=0.0, lt=360.0, description="right ascension, deg (ICRS)")
    dec: float = Field(ge=-90.0, le=90.0, description="declination, deg (ICRS)")
    photon_index: float = Field(2.0, description="power-law photon index Γ")
    nh: float = Field(0.1, ge=0.0, description="absorbing column, 1e22 cm⁻²")
    flux: float = Field(ge=0.0, description="absorbed 0.3–10 keV flux, erg/cm²/s, at flux_time_s")
    flux_time_s: float = Field(
        1000.0, gt=0.0, description="time after the trigger at which flux applies, s"
    )
    decay_index: float = Field(0.0, description="α in F ∝ (t − T0)^−α; 0 for a constant source")
    line_energy_kev: float | None = Field(None, gt=0.2, lt=10.0, description="line centre, keV")
    line_flux: float = Field(0.0, ge=0.0, description="line flux, photons/cm²/s at flux_time_s")
    line_sigma_kev: float = Field(0.0, ge=0.0, description="intrinsic line width σ, keV")


class Excursion(BaseModel):
    """An interval during which the pointing is off its nominal position."""

    model_config = ConfigDict(extra="forbid")

    start: float = Field(description="seconds after TSTART")
    stop: float = Field(description="seconds after TSTART")
    offset_arcmin: float = Field(description="pointing offset towards the north, arcmin")


class Flare(BaseModel):
    """A background flare: extra particle events in an interval."""

    model_config = ConfigDict(extra="forbid")

    start: float = Field(description="seconds after TSTART")
    stop: float = Field(description="seconds after TSTART")
    rate: float = Field(gt=0.0, description="extra counts/s over the detector")


class Scene(BaseModel):
    """Everything the simulator needs to write one L0 observation."""

    model_config = ConfigDict(extra="forbid")

    obs_id: str = Field("sim0001", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    program: str = "TargetOfOpportunity-Nom"
    object: str = "SIMULATED"
    burst_id: str | None = None
    ra_pnt: float = Field(180.0, ge=0.0, lt=360.0, description="nominal pointing RA, deg")
    dec_pnt: float = Field(30.0, ge=-90.0, le=90.0, description="nominal pointing Dec, deg")
    roll: float = Field(0.0, description="position angle of +RAWY, deg")
    tstart: float = Field(
        mission_seconds("2026-02-25T12:00:00"), description="observation start, mission s"
    )
    duration: float = Field(1000.0, gt=0.0, le=1.0e6, description="observation length, s")
    trigger_time: float | None = Field(None, description="burst trigger T0, mission s")
    sources: list[Source] = Field(default_factory=list)
    particle_rate: float = Field(0.3, ge=0.0, description="particle background, counts/s")
    sky_rate: float = Field(0.2, ge=0.0, description="diffuse sky background on axis, counts/s")
    hot_pixel_rate: float = Field(0.02, ge=0.0, description="counts/s per hot pixel")
    bad_column_rate: float = Field(0.5, ge=0.0, description="counts/s along each bad column")
    jitter_arcsec: float = Field(2.0, ge=0.0, description="attitude jitter per axis, arcsec rms")
    temp_start_c: float = Field(-65.0, description="CCD temperature at TSTART, °C")
    temp_drift_c: float = Field(0.0, description="temperature change over the observation, °C")
    charge_cloud_sigma_pix: float = Field(0.06, gt=0.0, lt=0.5)
    elv_deg: float = Field(45.0, description="Earth elevation outside occultations, deg")
    saa: list[Interval] = Field(default_factory=list, description="seconds after TSTART")
    occultations: list[Interval] = Field(default_factory=list, description="s after TSTART")
    excursions: list[Excursion] = Field(default_factory=list)
    flares: list[Flare] = Field(default_factory=list)
    boresight_error: bool = Field(
        False, description="draw a pointing knowledge error consistent with a 25″ (90 %) systematic"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _decay_needs_trigger(self) -> Scene:
        for i, source in enumerate(self.sources):
            if source.decay_index != 0.0:
                if self.trigger_time is None:
                    raise ValueError(f"sources[{i}] decays but the scene has no trigger_time")
                if self.trigger_time >= self.tstart:
                    raise ValueError("trigger_time must precede tstart for a decaying source")
        for name in ("saa", "occultations"):
            for start, stop in getattr(self, name):
                if stop <= start:
                    raise ValueError(f"{name} interval ({start}, {stop}) has stop <= start")
        return self

    @property
    def tstop(self) -> float:
        """Observation stop, mission s."""
        return self.tstart + self.duration


@dataclass(frozen=True)
class Photons:
    """Photons (or background events) landing on the detector, before the CCD."""

    time: np.ndarray  # mission s
    energy_ev: np.ndarray
    detx: np.ndarray  # continuous detector position, pixels (centres at integers)
    dety: np.ndarray
    origin: np.ndarray  # source index ≥ 0, or ORIGIN_* for background
    split: np.ndarray  # False: deposit in one pixel (hot pixels, bad column)

    @staticmethod
    def concatenate(parts: list[Photons]) -> Photons:
        """All parts as one set of columns."""
        return Photons(
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("time", "energy_ev", "detx", "dety", "origin", "split")
            )
        )

    def select(self, keep: np.ndarray) -> Photons:
        """The photons where ``keep`` is True (or at the given indices)."""
        return Photons(
            self.time[keep],
            self.energy_ev[keep],
            self.detx[keep],
            self.dety[keep],
            self.origin[keep],
            self.split[keep],
        )


# ----------------------------------------------------------------------------- spectra


def absorbed_power_law(energy_kev: np.ndarray, photon_index: float, nh: float) -> np.ndarray:
    """Absorbed power law of unit normalisation, photons/cm²/s/keV at 1 keV = 1."""
    tau = SIGMA_1KEV_PER_1E22 * nh * energy_kev ** (-8.0 / 3.0)
    return energy_kev ** (-photon_index) * np.exp(-tau)


def power_law_norm(flux: float, photon_index: float, nh: float) -> float:
    """Normalisation (photons/cm²/s/keV at 1 keV) giving ``flux`` (erg/cm²/s) in 0.3–10 keV."""
    e = np.geomspace(*FLUX_BAND_KEV, 4096)
    energy_flux = np.trapezoid(e * absorbed_power_law(e, photon_index, nh), e) * KEV_TO_ERG
    return flux / energy_flux


def _spectrum_rate_and_sampler(
    spectrum: np.ndarray, area: EffectiveArea
) -> tuple[float, np.ndarray]:
    """Count rate (counts/s) and normalised CDF on ENERGY_GRID_KEV of spectrum × area."""
    counts = spectrum * area(ENERGY_GRID_KEV)
    steps = 0.5 * (counts[1:] + counts[:-1]) * np.diff(ENERGY_GRID_KEV)
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    rate = float(cdf[-1])
    return rate, cdf / rate if rate > 0 else cdf


def _sample_energy_kev(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.interp(rng.random(n), cdf, ENERGY_GRID_KEV)


def source_count_rate(source: Source, area: EffectiveArea) -> tuple[float, float]:
    """On-axis continuum and line count rates (counts/s) of ``source`` at flux_time_s."""
    norm = power_law_norm(source.flux, source.photon_index, source.nh) if source.flux else 0.0
    spectrum = norm * absorbed_power_law(ENERGY_GRID_KEV, source.photon_index, source.nh)
    continuum, _ = _spectrum_rate_and_sampler(spectrum, area)
    line = 0.0
    if source.line_energy_kev is not None:
        line = source.line_flux * float(area(source.line_energy_kev))
    return continuum, line


# ------------------------------------------------------------------------- light curves


def _light_curve_integral(scene: Scene, source: Source) -> float:
    """∫ (F(t) / F(t_ref)) dt over the observation, s."""
    if source.decay_index == 0.0:
        return scene.duration
    t0, alpha, tref = scene.trigger_time, source.decay_index, source.flux_time_s
    a, b = scene.tstart - t0, scene.tstop - t0
    if alpha == 1.0:
        return tref * np.log(b / a)
    return tref**alpha * (b ** (1 - alpha) - a ** (1 - alpha)) / (1 - alpha)


def _sample_times(rng: np.random.Generator, scene: Scene, source: Source, n: int) -> np.ndarray:
    """Arrival times (mission s) following F ∝ (t − T0)^−α, by inverse CDF."""
    q = rng.random(n)
    if source.decay_index == 0.0:
        return scene.tstart + q * scene.duration
    t0, alpha = scene.trigger_time, source.decay_index
    a, b = scene.tstart - t0, scene.tstop - t0
    if alpha == 1.0:
        return t0 + a * (b / a) ** q
    p = 1.0 - alpha
    return t0 + (a**p + q * (b**p - a**p)) ** (1.0 / p)


# ----------------------------------------------------------------------------- attitude


@dataclass(frozen=True)
class Attitude:
    """Recorded 1 Hz attitude (kept also in the nominal tangent plane) and the boresight error."""

    time: np.ndarray  # mission s
    ra: np.ndarray  # deg
    dec: np.ndarray
    roll: np.ndarray
    xi: np.ndarray  # radians, record in the nominal tangent plane
    eta: np.ndarray
    ra0: float  # nominal pointing, deg
    dec0: float
    boresight_xi: float  # radians, true minus recorded pointing
    boresight_eta: float

    def true_pointing(self, time: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """True (RA, Dec, roll) in degrees at ``time``: interpolated record + boresight error."""
        xi = np.interp(time, self.time, self.xi) + self.boresight_xi
        eta = np.interp(time, self.time, self.eta) + self.boresight_eta
        ra, dec = standard_to_radec(xi, eta, self.ra0, self.dec0)
        return ra, dec, np.interp(time, self.time, self.roll)


def simulate_attitude(rng: np.random.Generator, scene: Scene) -> Attitude:
    """1 Hz attitude record with jitter and excursions, and the boresight error."""
    n = int(np.ceil(scene.duration)) + 1
    time = scene.tstart + np.arange(n, dtype=np.float64)
    jitter = np.radians(scene.jitter_arcsec / 3600.0)
    xi = rng.normal(0.0, jitter, n) if jitter > 0 else np.zeros(n)
    eta = rng.normal(0.0, jitter, n) if jitter > 0 else np.zeros(n)
    for excursion in scene.excursions:
        inside = (time - scene.tstart >= excursion.start) & (time - scene.tstart < excursion.stop)
        eta[inside] += np.radians(excursion.offset_arcmin / 60.0)
    ra, dec = standard_to_radec(xi, eta, scene.ra_pnt, scene.dec_pnt)
    roll = np.full(n, float(scene.roll))
    if scene.boresight_error:
        error = np.radians(rng.normal(0.0, BORESIGHT_SIGMA_ARCSEC / 3600.0, 2))
    else:
        error = np.zeros(2)
    return Attitude(
        time, ra, dec, roll, xi, eta, scene.ra_pnt, scene.dec_pnt, float(error[0]), float(error[1])
    )


# ------------------------------------------------------------------------------ photons


def _in_intervals(time: np.ndarray, tstart: float, intervals: list[Interval]) -> np.ndarray:
    inside = np.zeros(time.shape, dtype=bool)
    for start, stop in intervals:
        inside |= (time >= tstart + start) & (time < tstart + stop)
    return inside


def _source_photons(
    rng: np.random.Generator,
    scene: Scene,
    index: int,
    attitude: Attitude,
    cal: Mapping[str, Any],
) -> tuple[Photons, dict[str, Any]]:
    source = scene.sources[index]
    area: EffectiveArea = cal["SPECRESP"]
    geometry: Geometry = cal["TELDEF"]
    continuum_rate, line_rate = source_count_rate(source, area)
    exposure = _light_curve_integral(scene, source)
    n_cont = rng.poisson(continuum_rate * exposure)
    n_line = rng.poisson(line_rate * exposure)
    n = n_cont + n_line
    time = _sample_times(rng, scene, source, n)
    norm = power_law_norm(source.flux, source.photon_index, source.nh) if source.flux else 0.0
    _, cdf = _spectrum_rate_and_sampler(
        norm * absorbed_power_law(ENERGY_GRID_KEV, source.photon_index, source.nh), area
    )
    energy = _sample_energy_kev(rng, cdf, n_cont)
    if n_line:
        line = rng.normal(source.line_energy_kev, source.line_sigma_kev, n_line)
        energy = np.concatenate([energy, line])
    # where the source falls on the detector at each photon's time (true pointing)
    ra_t, dec_t, roll_t = attitude.true_pointing(time)
    xi, eta = radec_to_standard(source.ra, source.dec, ra_t, dec_t)
    dx, dy = standard_to_detector(xi, eta, roll_t, geometry)
    psf_dx, psf_dy = cal["PSF"].sample(rng, n)
    pix_per_arcmin = 60.0 / geometry.plate_scale_arcsec
    detx = geometry.axis_x + dx + psf_dx * pix_per_arcmin
    dety = geometry.axis_y + dy + psf_dy * pix_per_arcmin
    theta = np.hypot(detx - geometry.axis_x, dety - geometry.axis_y) / pix_per_arcmin
    kept = rng.random(n) < cal["VIGNET"](theta)
    kept &= ~_in_intervals(time, scene.tstart, scene.occultations)
    photons = Photons(
        time, energy * 1000.0, detx, dety, np.full(n, index, np.int16), np.ones(n, bool)
    ).select(kept)
    xi_true, eta_true = radec_to_standard(source.ra, source.dec, scene.ra_pnt, scene.dec_pnt)
    truth = {
        "ra": source.ra,
        "dec": source.dec,
        "expected_photons": (continuum_rate + line_rate) * exposure,
        "photons_drawn": int(n),
        "continuum_rate_on_axis": continuum_rate,
        "line_rate_on_axis": line_rate,
        "offaxis_arcmin": float(np.degrees(np.hypot(xi_true, eta_true)) * 60.0),
    }
    return photons, truth


def _uniform_on_detector(
    rng: np.random.Generator, n: int, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    # the detector spans pixel edges −0.5 … npix − 0.5
    return (
        rng.uniform(-0.5, geometry.npix - 0.5, n),
        rng.uniform(-0.5, geometry.npix - 0.5, n),
    )


def _background_photons(
    rng: np.random.Generator, scene: Scene, cal: Mapping[str, Any]
) -> list[Photons]:
    geometry: Geometry = cal["TELDEF"]
    parts = []
    # particles: flat in position and energy, not vignetted, not occulted
    n = rng.poisson(scene.particle_rate * scene.duration)
    detx, dety = _uniform_on_detector(rng, n, geometry)
    time = scene.tstart + rng.random(n) * scene.duration
    energy = rng.uniform(*BAND_KEV, n) * 1000.0
    parts.append(
        Photons(time, energy, detx, dety, np.full(n, ORIGIN_PARTICLE, np.int16), np.ones(n, bool))
    )
    for flare in scene.flares:
        n = rng.poisson(flare.rate * (flare.stop - flare.start))
        detx, dety = _uniform_on_detector(rng, n, geometry)
        time = scene.tstart + rng.uniform(flare.start, flare.stop, n)
        energy = rng.uniform(*BAND_KEV, n) * 1000.0
        parts.append(
            Photons(time, energy, detx, dety, np.full(n, ORIGIN_FLARE, np.int16), np.ones(n, bool))
        )
    # diffuse sky: soft, vignetted (the rate is the on-axis-equivalent rate), occulted
    n = rng.poisson(scene.sky_rate * scene.duration)
    detx, dety = _uniform_on_detector(rng, n, geometry)
    time = scene.tstart + rng.random(n) * scene.duration
    _, cdf = _spectrum_rate_and_sampler(
        absorbed_power_law(ENERGY_GRID_KEV, 2.0, 0.0), cal["SPECRESP"]
    )
    energy = _sample_energy_kev(rng, cdf, n) * 1000.0
    theta = np.hypot(detx - geometry.axis_x, dety - geometry.axis_y) * (
        geometry.plate_scale_arcsec / 60.0
    )
    kept = (rng.random(n) < cal["VIGNET"](theta)) & ~_in_intervals(
        time, scene.tstart, scene.occultations
    )
    parts.append(
        Photons(
            time, energy, detx, dety, np.full(n, ORIGIN_SKY, np.int16), np.ones(n, bool)
        ).select(kept)
    )
    parts.extend(_bad_pixel_events(rng, scene, cal["BADPIX"]))
    return parts


def _bad_pixel_events(rng: np.random.Generator, scene: Scene, badpix: BadPixels) -> list[Photons]:
    """Events at the hot pixels and along the bad columns (single-pixel deposits)."""
    parts = []
    hot_x, hot_y = badpix.hot_pixels
    counts = rng.poisson(scene.hot_pixel_rate * scene.duration, hot_x.size)
    detx = np.repeat(hot_x, counts).astype(np.float64)
    dety = np.repeat(hot_y, counts).astype(np.float64)
    n = detx.size
    time = scene.tstart + rng.random(n) * scene.duration
    energy = rng.uniform(200.0, 1000.0, n)
    parts.append(
        Photons(time, energy, detx, dety, np.full(n, ORIGIN_HOT, np.int16), np.zeros(n, bool))
    )
    columns = badpix.bad_columns
    counts = rng.poisson(scene.bad_column_rate * scene.duration, columns.size)
    detx = np.repeat(columns, counts).astype(np.float64)
    n = detx.size
    dety = rng.integers(0, 256, n).astype(np.float64)
    time = scene.tstart + rng.random(n) * scene.duration
    energy = rng.uniform(200.0, 2000.0, n)
    parts.append(
        Photons(time, energy, detx, dety, np.full(n, ORIGIN_COLUMN, np.int16), np.zeros(n, bool))
    )
    return parts


# -------------------------------------------------------------------------------- CCD


def _axis_shares(offset: np.ndarray, sigma: float) -> np.ndarray:
    """Charge fractions (n, 3) in the pixels at −1, 0, +1 of a Gaussian cloud at ``offset``.

    ``offset`` is the cloud centre relative to the pixel centre, in pixels (|offset| ≤ 0.5).
    """
    low = ndtr((-0.5 - offset) / sigma)
    high = 1.0 - ndtr((0.5 - offset) / sigma)
    return np.stack([low, 1.0 - low - high, high], axis=1)


def _pulse_heights(
    rng: np.random.Generator,
    photons: Photons,
    rawx: np.ndarray,
    rawy: np.ndarray,
    temp_c: np.ndarray,
    cal: Mapping[str, Any],
    cloud_sigma: float,
) -> np.ndarray:
    """Raw PHAS (n, 9) int16: split charge, CTI loss, read noise, gain, pedestal."""
    resolution: Resolution = cal["RESOL"]
    cti: Cti = cal["CTI"]
    gain: Gain = cal["GAIN"]
    pedestal: Pedestal = cal["PEDESTAL"]
    n = rawx.size
    # Fano noise on the collected charge (read noise is added per pixel below)
    energy = photons.energy_ev
    charge = energy + rng.normal(0.0, 1.0, n) * np.sqrt(
        resolution.fano * energy * resolution.ev_per_electron
    )
    fx = _axis_shares(photons.detx - rawx, cloud_sigma)
    fy = _axis_shares(photons.dety - rawy, cloud_sigma)
    single = ~photons.split
    fx[single] = (0.0, 1.0, 0.0)
    fy[single] = (0.0, 1.0, 0.0)
    shares = (fy[:, :, None] * fx[:, None, :]).reshape(n, 9)  # index 3·(dy+1) + (dx+1)
    rows = rawy[:, None] + np.repeat(np.arange(-1, 2), 3)[None, :]
    columns = rawx[:, None] + np.tile(np.arange(-1, 2), 3)[None, :]
    transfer = cti.transfer_factor(photons.time[:, None], rows)
    pixel_ev = charge[:, None] * shares * transfer
    pixel_ev += rng.normal(0.0, resolution.read_noise_ev, (n, 9))
    adu = pixel_ev / gain.ev_per_adu(temp_c)[:, None] + pedestal.adu[columns]
    return np.clip(np.rint(adu), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------- scene


def _hk(scene: Scene) -> dict[str, np.ndarray]:
    n = int(np.ceil(scene.duration)) + 1
    time = scene.tstart + np.arange(n, dtype=np.float64)
    temp = scene.temp_start_c + scene.temp_drift_c * (time - scene.tstart) / scene.duration
    elv = np.where(_in_intervals(time, scene.tstart, scene.occultations), -30.0, scene.elv_deg)
    return {
        "TIME": time,
        "CCD_TEMP": temp.astype(np.float32),
        "SAA": _in_intervals(time, scene.tstart, scene.saa),
        "ELV": elv.astype(np.float32),
    }


def _primary(scene: Scene) -> dict[str, Any]:
    target = scene.sources[0] if scene.sources else None
    return {
        "OBS_ID": scene.obs_id,
        "PROGRAM": scene.program,
        "OBJECT": scene.object,
        "RA_OBJ": target.ra if target else scene.ra_pnt,
        "DEC_OBJ": target.dec if target else scene.dec_pnt,
        "RA_PNT": scene.ra_pnt,
        "DEC_PNT": scene.dec_pnt,
        "PA_PNT": scene.roll,
        "TSTART": scene.tstart,
        "TSTOP": scene.tstop,
        "DATE-OBS": iso_from_mission(scene.tstart),
        "DATE-END": iso_from_mission(scene.tstop),
        "CREATOR": "mxt simulate",
        "TRIGTIME": scene.trigger_time,
        "BURST_ID": scene.burst_id,
    }


def simulate(
    scene: Scene, calibration: Mapping[str, Any] | None = None
) -> tuple[fits.HDUList, dict[str, Any]]:
    """Simulate one observation.

    Parameters
    ----------
    scene
        The scene.
    calibration
        Calibration objects keyed by codename; the model CALDB by default.

    Returns
    -------
    l0, truth
        The L0 HDUList (L0_FORMAT.md) and the truth: per-source dicts (position,
        expected and detected counts, sky pixel), the boresight error (arcsec), and
        per-event ``origin`` (source index, or −1 particle, −2 sky, −3 hot pixel,
        −4 bad column, −5 flare) and ``energy_ev`` in the L0 row order.
    """
    cal = {**model_calibrations(), **(calibration or {})}
    geometry: Geometry = cal["TELDEF"]
    rng = np.random.default_rng(scene.seed)
    attitude = simulate_attitude(rng, scene)
    parts, source_truth = [], []
    for index in range(len(scene.sources)):
        photons, truth = _source_photons(rng, scene, index, attitude, cal)
        parts.append(photons)
        source_truth.append(truth)
    parts.extend(_background_photons(rng, scene, cal))
    photons = Photons.concatenate(parts)
    # pixel hit, transmitted window, SAA
    rawx = np.rint(photons.detx).astype(np.int16)
    rawy = np.rint(photons.dety).astype(np.int16)
    kept = (rawx >= RAW_MIN) & (rawx <= RAW_MAX) & (rawy >= RAW_MIN) & (rawy <= RAW_MAX)
    kept &= ~_in_intervals(photons.time, scene.tstart, scene.saa)
    kept &= (photons.time >= scene.tstart) & (photons.time < scene.tstop)
    frame = np.floor((photons.time - scene.tstart) / FRAME_TIME_S).astype(np.int32)
    kept_index = np.flatnonzero(kept)
    order = kept_index[np.argsort(frame[kept_index], kind="stable")]
    photons = photons.select(order)
    rawx, rawy, frame = rawx[order], rawy[order], frame[order]
    hk = _hk(scene)
    time = scene.tstart + (frame + 0.5) * FRAME_TIME_S
    temp_c = np.interp(photons.time, hk["TIME"], hk["CCD_TEMP"].astype(np.float64))
    phas = np.empty((rawx.size, 9), dtype=np.int16)
    for start in range(0, rawx.size, CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        phas[part] = _pulse_heights(
            rng,
            photons.select(part),
            rawx[part],
            rawy[part],
            temp_c[part],
            cal,
            scene.charge_cloud_sigma_pix,
        )
    events = {"TIME": time, "FRAME": frame, "RAWX": rawx, "RAWY": rawy, "PHAS": phas}
    attitude_columns = {
        "TIME": attitude.time,
        "RA": attitude.ra,
        "DEC": attitude.dec,
        "ROLL": attitude.roll,
    }
    l0 = build_l0(_primary(scene), events, hk, attitude_columns)
    for index, truth in enumerate(source_truth):
        truth["detected"] = int(np.count_nonzero(photons.origin == index))
    truth = {
        "sources": source_truth,
        "boresight_error_arcsec": (
            float(np.degrees(attitude.boresight_xi) * 3600.0),
            float(np.degrees(attitude.boresight_eta) * 3600.0),
        ),
        "n_events": int(rawx.size),
        "origin": photons.origin,
        "energy_ev": photons.energy_ev.astype(np.float32),
        "plate_scale_arcsec": geometry.plate_scale_arcsec,
    }
    return l0, truth


__all__ = [
    "Excursion",
    "Flare",
    "Scene",
    "Source",
    "simulate",
]
