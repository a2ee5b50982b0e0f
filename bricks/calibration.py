"""The model CALDB: one small frozen dataclass per calibration product.

Each class round-trips through a FITS binary table carrying the CALDB keywords
(``CCNM0001`` is the codename that names it) and gives SCIENCE.md's model values
through :meth:`model`. Bricks and the simulator use the *same* objects, so the
simulator inverts exactly what the bricks correct.

Scalar products (gain, CTI, grades, geometry, PSF, vignetting, resolution, selection)
are one-row tables with a column per parameter; tabulated products (bad pixels,
pedestal, effective area) have a row per entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from astropy.io import fits
from scipy.special import erf

from bricks.errors import BadInput
from bricks.timeutil import SECONDS_PER_YEAR, mission_seconds

CALDB_VALID_DATE = "2024-06-22"
CALDB_VALID_TIME = "00:00:00"
CALDB_VERSION = "20240622v001"
ARCMIN_PER_RADIAN = 180.0 / np.pi * 60.0

# SCIENCE.md / L0_FORMAT.md model values.
HOT_PIXELS = ((17, 201), (64, 64), (100, 30), (150, 220), (201, 77), (230, 140))
BAD_COLUMNS = (187,)
AREA_TABLE_KEV_CM2 = (
    (0.2, 2.0),
    (0.3, 10.0),
    (0.5, 25.0),
    (1.0, 35.0),
    (1.5, 33.0),
    (2.0, 25.0),
    (3.0, 12.0),
    (4.0, 6.0),
    (5.0, 3.5),
    (6.0, 2.0),
    (8.0, 0.8),
    (10.0, 0.3),
)


def caldb_filename(codename: str) -> str:
    """File name of a model CALDB file: ``mxt_<codename>_20240622v001.fits``."""
    return f"mxt_{codename.lower()}_{CALDB_VERSION}.fits"


class _CaldbProduct:
    """CALDB header and scalar-table (de)serialisation shared by every product."""

    codename: ClassVar[str]
    description: ClassVar[str]
    hduclas1: ClassVar[str] = "RESPONSE"
    boundary: ClassVar[str] = "NONE"
    units: ClassVar[dict[str, str]] = {}

    def caldb_header(self) -> dict[str, Any]:
        """CALDB and OGIP keywords of this product's extension."""
        return {
            "EXTNAME": self.codename,
            "TELESCOP": "SVOM",
            "INSTRUME": "MXT",
            "DETNAM": "PNCCD",
            "FILTER": "NONE",
            "HDUCLASS": "OGIP",
            "HDUCLAS1": self.hduclas1,
            "HDUCLAS2": self.codename,
            "HDUVERS": "1.0.0",
            "CCLS0001": "BCF",
            "CDTP0001": "DATA",
            "CCNM0001": self.codename,
            "CVSD0001": CALDB_VALID_DATE,
            "CVST0001": CALDB_VALID_TIME,
            "CBD10001": self.boundary,
            "CDES0001": self.description,
        }

    def _finish(self, hdu: fits.BinTableHDU) -> fits.BinTableHDU:
        for key, value in self.caldb_header().items():
            hdu.header[key] = value
        return hdu

    def to_hdu(self) -> fits.BinTableHDU:
        """A one-row table with a column per parameter (D for floats, J for ints)."""
        columns = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            fmt = "J" if isinstance(value, int | np.integer) else "D"
            columns.append(
                fits.Column(
                    name=f.name.upper(),
                    format=fmt,
                    unit=self.units.get(f.name),
                    array=np.array([value]),
                )
            )
        return self._finish(fits.BinTableHDU.from_columns(columns))

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU) -> Self:
        """Rebuild the product from its extension (as written by :meth:`to_hdu`)."""
        _check_codename(hdu, cls.codename)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = f.default
            raw = _column(hdu, f.name.upper())[0]
            values[f.name] = int(raw) if isinstance(default, int) else float(raw)
        return cls(**values)

    @classmethod
    def model(cls) -> Self:
        """SCIENCE.md's model values (the dataclass defaults)."""
        return cls()


def _check_codename(hdu: fits.BinTableHDU, codename: str) -> None:
    found = hdu.header.get("CCNM0001")
    if found != codename:
        raise ValueError(f"extension {hdu.name!r} has CCNM0001={found!r}, expected {codename!r}")


def _column(hdu: fits.BinTableHDU, name: str) -> np.ndarray:
    if hdu.data is None or name not in hdu.columns.names:
        raise ValueError(f"CALDB extension {hdu.name!r} has no column {name!r}")
    return np.asarray(hdu.data[name])


def with_neighbours(mask: np.ndarray) -> np.ndarray:
    """``mask`` or any of its 8 neighbours, same shape (a 3 × 3 binary dilation).

    Nine shifted ORs of a zero-bordered copy: a tenth of ``ndimage.binary_dilation``'s
    time on the 256² detector.
    """
    ny, nx = mask.shape
    bordered = np.zeros((ny + 2, nx + 2), dtype=bool)
    bordered[1:-1, 1:-1] = mask
    rows = bordered[:-2] | bordered[1:-1] | bordered[2:]
    return rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]


@dataclass(frozen=True, eq=False)
class BadPixels(_CaldbProduct):
    """Hot pixels and bad columns.

    Parameters
    ----------
    rawx, rawy
        Pixel coordinates; ``rawy = -1`` marks a whole column.
    kind
        ``"hot"`` or ``"column"`` per entry.
    """

    codename: ClassVar[str] = "BADPIX"
    description: ClassVar[str] = "Hot pixels and bad columns"
    hduclas1: ClassVar[str] = "BADPIX"

    rawx: np.ndarray
    rawy: np.ndarray
    kind: np.ndarray

    @classmethod
    def model(cls) -> Self:
        """The six hot pixels and bad column 187 of L0_FORMAT.md."""
        hot = np.array(HOT_PIXELS, dtype=np.int16)
        columns = np.array(BAD_COLUMNS, dtype=np.int16)
        return cls(
            rawx=np.concatenate([hot[:, 0], columns]),
            rawy=np.concatenate([hot[:, 1], np.full(columns.size, -1, np.int16)]),
            kind=np.array(["hot"] * len(hot) + ["column"] * len(columns)),
        )

    @property
    def hot_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(rawx, rawy) of the single bad pixels."""
        hot = self.rawy >= 0
        return self.rawx[hot], self.rawy[hot]

    @property
    def bad_columns(self) -> np.ndarray:
        """RAWX of the whole bad columns."""
        return self.rawx[self.rawy < 0]

    def mask(self, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
        """Boolean image ``[rawy, rawx]``, True where the pixel is bad."""
        image = np.zeros(shape, dtype=bool)
        x, y = self.hot_pixels
        image[y, x] = True
        image[:, self.bad_columns] = True
        return image

    def to_hdu(self) -> fits.BinTableHDU:
        """Table RAWX, RAWY (−1: whole column), TYPE."""
        hdu = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="RAWX", format="I", unit="pixel", array=self.rawx),
                fits.Column(name="RAWY", format="I", unit="pixel", array=self.rawy),
                fits.Column(name="TYPE", format="8A", array=self.kind),
            ]
        )
        return self._finish(hdu)

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU) -> Self:
        """Rebuild from a BADPIX extension."""
        _check_codename(hdu, cls.codename)
        return cls(
            rawx=_column(hdu, "RAWX").astype(np.int16),
            rawy=_column(hdu, "RAWY").astype(np.int16),
            kind=np.char.strip(_column(hdu, "TYPE").astype(str)),
        )


@dataclass(frozen=True, eq=False)
class Pedestal(_CaldbProduct):
    """Per-column offset (ADU) included in the raw PHAS."""

    codename: ClassVar[str] = "PEDESTAL"
    description: ClassVar[str] = "Per-column pedestal offsets"

    adu: np.ndarray

    @classmethod
    def model(cls) -> Self:
        """``100 + ((7·x) mod 11) − 5`` ADU for column x."""
        x = np.arange(256)
        return cls(adu=(100 + (7 * x) % 11 - 5).astype(np.float32))

    def to_hdu(self) -> fits.BinTableHDU:
        """Table RAWX, PEDESTAL (ADU), one row per column."""
        hdu = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="RAWX", format="I", unit="pixel", array=np.arange(self.adu.size)),
                fits.Column(name="PEDESTAL", format="E", unit="adu", array=self.adu),
            ]
        )
        return self._finish(hdu)

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU) -> Self:
        """Rebuild from a PEDESTAL extension (rows in any order)."""
        _check_codename(hdu, cls.codename)
        rawx = _column(hdu, "RAWX").astype(int)
        adu = np.zeros(rawx.max() + 1, dtype=np.float32)
        adu[rawx] = _column(hdu, "PEDESTAL")
        return cls(adu=adu)


@dataclass(frozen=True)
class Gain(_CaldbProduct):
    """Temperature-dependent gain: G(T) = g_ref · (1 + k · (T − T_ref)) eV/ADU."""

    codename: ClassVar[str] = "GAIN"
    description: ClassVar[str] = "Temperature-dependent gain"
    boundary: ClassVar[str] = "TEMP(-80--50)C"
    units: ClassVar[dict[str, str]] = {
        "ev_per_adu_ref": "eV/adu",
        "temp_ref_c": "Celsius",
        "temp_coeff": "1/Celsius",
    }

    ev_per_adu_ref: float = 2.5
    temp_ref_c: float = -65.0
    temp_coeff: float = 0.002

    def ev_per_adu(self, temp_c: np.ndarray) -> np.ndarray:
        """Gain in eV per ADU at detector temperature ``temp_c`` (°C)."""
        return self.ev_per_adu_ref * (
            1.0 + self.temp_coeff * (np.asarray(temp_c) - self.temp_ref_c)
        )


@dataclass(frozen=True)
class Cti(_CaldbProduct):
    """Charge transfer inefficiency growing linearly with time."""

    codename: ClassVar[str] = "CTI"
    description: ClassVar[str] = "Charge transfer inefficiency"
    units: ClassVar[dict[str, str]] = {"rate_per_year": "1/yr", "epoch_mission_s": "s"}

    c0: float = 1.0e-5
    rate_per_year: float = 2.0e-6
    epoch_mission_s: float = mission_seconds(CALDB_VALID_DATE)

    def coefficient(self, time_s: np.ndarray) -> np.ndarray:
        """CTI per transfer at mission time ``time_s`` (s)."""
        years = (np.asarray(time_s, dtype=np.float64) - self.epoch_mission_s) / SECONDS_PER_YEAR
        return self.c0 + self.rate_per_year * years

    def transfer_factor(self, time_s: np.ndarray, rawy: np.ndarray) -> np.ndarray:
        """Fraction of the charge left after RAWY + 1 transfers: (1 − c)^(RAWY + 1)."""
        c = self.coefficient(time_s)
        # exp/log1p is exact enough and avoids a float power per element
        return np.exp((np.asarray(rawy, dtype=np.float64) + 1.0) * np.log1p(-c))


@dataclass(frozen=True)
class EventGrades(_CaldbProduct):
    """Event reconstruction thresholds and the largest valid pattern."""

    codename: ClassVar[str] = "GRADES"
    description: ClassVar[str] = "Event and split thresholds, EPIC-pn patterns"
    units: ClassVar[dict[str, str]] = {"event_threshold_ev": "eV", "split_threshold_ev": "eV"}

    event_threshold_ev: float = 150.0
    split_threshold_ev: float = 60.0
    max_valid_pattern: int = 12


@dataclass(frozen=True)
class Geometry(_CaldbProduct):
    """Detector geometry (teldef): pixel size, focal length, optical axis, frames."""

    codename: ClassVar[str] = "TELDEF"
    description: ClassVar[str] = "Detector geometry and frame time"
    units: ClassVar[dict[str, str]] = {
        "pixel_mm": "mm",
        "focal_mm": "mm",
        "axis_x": "pixel",
        "axis_y": "pixel",
        "frame_time_s": "s",
    }

    npix: int = 256
    pixel_mm: float = 0.075
    focal_mm: float = 1150.0
    axis_x: float = 127.5
    axis_y: float = 127.5
    frame_time_s: float = 0.1

    @property
    def pixel_radians(self) -> float:
        """Angular size of one pixel, radians (gnomonic, at the axis)."""
        return self.pixel_mm / self.focal_mm

    @property
    def plate_scale_arcsec(self) -> float:
        """Angular size of one pixel, arcsec (≈ 13.45″)."""
        return self.pixel_radians * ARCMIN_PER_RADIAN * 60.0


@dataclass(frozen=True)
class Psf(_CaldbProduct):
    """Energy-independent lobster-eye PSF: core, cross arms, diffuse halo.

    Angles in arcmin; ``dx`` along detector +RAWX, ``dy`` along +RAWY.
    """

    codename: ClassVar[str] = "PSF"
    description: ClassVar[str] = "Lobster-eye point spread function model"
    units: ClassVar[dict[str, str]] = {
        "core_fwhm_arcmin": "arcmin",
        "arm_fwhm_arcmin": "arcmin",
        "arm_scale_arcmin": "arcmin",
        "diffuse_radius_arcmin": "arcmin",
    }

    core_fwhm_arcmin: float = 8.0
    core_frac: float = 0.45
    arm_fwhm_arcmin: float = 8.0
    arm_scale_arcmin: float = 15.0
    arm_frac: float = 0.35
    diffuse_frac: float = 0.20
    diffuse_radius_arcmin: float = 30.0

    @property
    def core_sigma(self) -> float:
        """Gaussian sigma of the core, arcmin."""
        return self.core_fwhm_arcmin / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    @property
    def arm_sigma(self) -> float:
        """Gaussian sigma across an arm, arcmin."""
        return self.arm_fwhm_arcmin / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    def _arm_density(self, along: np.ndarray, across: np.ndarray) -> np.ndarray:
        """One arm, normalised to 1: Gaussian across × two-sided exponential along."""
        s, lam = self.arm_sigma, self.arm_scale_arcmin
        gauss = np.exp(-0.5 * (across / s) ** 2) / (np.sqrt(2 * np.pi) * s)
        return gauss * np.exp(-np.abs(along) / lam) / (2.0 * lam)

    def density(self, dx_arcmin: np.ndarray, dy_arcmin: np.ndarray) -> np.ndarray:
        """Probability density per arcmin², integrating to 1 over the plane."""
        dx = np.asarray(dx_arcmin, dtype=np.float64)
        dy = np.asarray(dy_arcmin, dtype=np.float64)
        r2 = dx * dx + dy * dy
        s = self.core_sigma
        core = np.exp(-0.5 * r2 / s**2) / (2 * np.pi * s**2)
        arms = 0.5 * (self._arm_density(dx, dy) + self._arm_density(dy, dx))
        rd = self.diffuse_radius_arcmin
        diffuse = np.where(r2 <= rd * rd, 1.0 / (np.pi * rd * rd), 0.0)
        return self.core_frac * core + self.arm_frac * arms + self.diffuse_frac * diffuse

    def enclosed_fraction(self, radius_arcmin: np.ndarray) -> np.ndarray:
        """Fraction of the PSF inside a circle of ``radius_arcmin`` about the centre."""
        r = np.atleast_1d(np.asarray(radius_arcmin, dtype=np.float64))
        core = 1.0 - np.exp(-0.5 * (r / self.core_sigma) ** 2)
        diffuse = np.minimum((r / self.diffuse_radius_arcmin) ** 2, 1.0)
        # one arm: ∫ exp-law(x) · P(|y| < sqrt(r² − x²)) dx over |x| < r, integrated in
        # the exponential's cumulative t = 1 − exp(−|x|/λ) so the integrand is smooth
        u, w = np.polynomial.legendre.leggauss(64)
        t_max = 1.0 - np.exp(-r / self.arm_scale_arcmin)
        t = 0.5 * t_max[:, None] * (u[None, :] + 1.0)
        x = -self.arm_scale_arcmin * np.log1p(-t)
        half_chord = np.sqrt(np.maximum(r[:, None] ** 2 - x**2, 0.0))
        across = erf(half_chord / (np.sqrt(2.0) * self.arm_sigma))
        arm = 0.5 * t_max * (across * w[None, :]).sum(axis=1)
        total = self.core_frac * core + self.arm_frac * arm + self.diffuse_frac * diffuse
        return total.reshape(np.shape(radius_arcmin))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` photon offsets (dx, dy) in arcmin from the PSF."""
        component = rng.choice(3, size=n, p=[self.core_frac, self.arm_frac, self.diffuse_frac])
        dx = rng.normal(0.0, self.core_sigma, n)
        dy = rng.normal(0.0, self.core_sigma, n)
        arm = component == 1
        n_arm = int(arm.sum())
        along = rng.laplace(0.0, self.arm_scale_arcmin, n_arm)
        across = rng.normal(0.0, self.arm_sigma, n_arm)
        horizontal = rng.random(n_arm) < 0.5
        dx[arm] = np.where(horizontal, along, across)
        dy[arm] = np.where(horizontal, across, along)
        halo = component == 2
        n_halo = int(halo.sum())
        radius = self.diffuse_radius_arcmin * np.sqrt(rng.random(n_halo))
        angle = rng.uniform(0.0, 2 * np.pi, n_halo)
        dx[halo] = radius * np.cos(angle)
        dy[halo] = radius * np.sin(angle)
        return dx, dy


@dataclass(frozen=True, eq=False)
class EffectiveArea(_CaldbProduct):
    """On-axis effective area (optics × filter × QE), log-log interpolated."""

    codename: ClassVar[str] = "SPECRESP"
    description: ClassVar[str] = "On-axis effective area"

    energy_kev: np.ndarray
    area_cm2: np.ndarray

    @classmethod
    def model(cls) -> Self:
        """SCIENCE.md's tabulated area, 0.2–10 keV."""
        table = np.array(AREA_TABLE_KEV_CM2)
        return cls(energy_kev=table[:, 0], area_cm2=table[:, 1])

    def __call__(self, energy_kev: np.ndarray) -> np.ndarray:
        """Effective area in cm² at ``energy_kev`` (keV); 0 outside the table."""
        e = np.asarray(energy_kev, dtype=np.float64)
        inside = (e >= self.energy_kev[0]) & (e <= self.energy_kev[-1])
        safe = np.clip(e, self.energy_kev[0], self.energy_kev[-1])
        log_area = np.interp(np.log(safe), np.log(self.energy_kev), np.log(self.area_cm2))
        return np.where(inside, np.exp(log_area), 0.0)

    def to_hdu(self) -> fits.BinTableHDU:
        """Table ENERGY (keV), SPECRESP (cm²)."""
        hdu = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="ENERGY", format="D", unit="keV", array=self.energy_kev),
                fits.Column(name="SPECRESP", format="D", unit="cm**2", array=self.area_cm2),
            ]
        )
        return self._finish(hdu)

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU) -> Self:
        """Rebuild from a SPECRESP extension."""
        _check_codename(hdu, cls.codename)
        return cls(
            energy_kev=_column(hdu, "ENERGY").astype(np.float64),
            area_cm2=_column(hdu, "SPECRESP").astype(np.float64),
        )


@dataclass(frozen=True)
class Vignetting(_CaldbProduct):
    """Vignetting V(θ) = 1 − coeff · (θ / θ_ref)²."""

    codename: ClassVar[str] = "VIGNET"
    description: ClassVar[str] = "Off-axis vignetting"
    units: ClassVar[dict[str, str]] = {"theta_ref_arcmin": "arcmin"}

    coeff: float = 0.1
    theta_ref_arcmin: float = 30.0

    def __call__(self, theta_arcmin: np.ndarray) -> np.ndarray:
        """Relative throughput at off-axis angle ``theta_arcmin`` (arcmin), in [0, 1]."""
        theta = np.asarray(theta_arcmin, dtype=np.float64)
        return np.clip(1.0 - self.coeff * (theta / self.theta_ref_arcmin) ** 2, 0.0, 1.0)


@dataclass(frozen=True)
class Resolution(_CaldbProduct):
    """Energy resolution from read noise and Fano statistics."""

    codename: ClassVar[str] = "RESOL"
    description: ClassVar[str] = "Energy resolution model"
    units: ClassVar[dict[str, str]] = {"read_noise_e": "electron", "ev_per_electron": "eV"}

    read_noise_e: float = 5.0
    ev_per_electron: float = 3.65
    fano: float = 0.12

    def fwhm_ev(self, energy_ev: np.ndarray) -> np.ndarray:
        """FWHM in eV at ``energy_ev`` (eV): 2.355 · w · sqrt(σ_read² + F · E / w)."""
        e = np.asarray(energy_ev, dtype=np.float64)
        w = self.ev_per_electron
        return 2.355 * w * np.sqrt(self.read_noise_e**2 + self.fano * e / w)

    @property
    def read_noise_ev(self) -> float:
        """Read noise per pixel, eV rms."""
        return self.read_noise_e * self.ev_per_electron


@dataclass(frozen=True)
class Selection(_CaldbProduct):
    """Screening criteria."""

    codename: ClassVar[str] = "SELECT"
    description: ClassVar[str] = "Screening criteria"
    hduclas1: ClassVar[str] = "SELECTION"
    units: ClassVar[dict[str, str]] = {
        "elv_min_deg": "deg",
        "pointing_tolerance_arcmin": "arcmin",
    }

    elv_min_deg: float = 10.0
    pattern_max: int = 12
    pi_min: int = 20
    pi_max: int = 1000
    pointing_tolerance_arcmin: float = 1.0
    flare_sigma: float = 5.0


CODENAMES: dict[str, type] = {
    cls.codename: cls
    for cls in (
        BadPixels,
        Pedestal,
        Gain,
        Cti,
        EventGrades,
        Geometry,
        Psf,
        EffectiveArea,
        Vignetting,
        Resolution,
        Selection,
    )
}


def model_calibrations() -> dict[str, Any]:
    """Every model calibration product, keyed by codename."""
    return {codename: cls.model() for codename, cls in CODENAMES.items()}


def calibration_from_hdulist(hdul: fits.HDUList) -> dict[str, Any]:
    """Every calibration extension of ``hdul``, rebuilt and keyed by its CCNM0001."""
    found: dict[str, Any] = {}
    for hdu in hdul[1:]:
        codename = hdu.header.get("CCNM0001")
        if codename in CODENAMES:
            found[codename] = CODENAMES[codename].from_hdu(hdu)
    return found


def _primary(codename: str, description: str) -> fits.PrimaryHDU:
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SVOM"
    primary.header["INSTRUME"] = "MXT"
    primary.header["CREATOR"] = "mxt model CALDB"
    primary.header["CCNM0001"] = codename
    primary.header["CDES0001"] = description
    return primary


def model_caldb_hdulists() -> dict[str, fits.HDUList]:
    """The model CALDB as files: ``{filename: HDUList}``, one file per codename."""
    files: dict[str, fits.HDUList] = {}
    for codename, product in model_calibrations().items():
        files[caldb_filename(codename)] = fits.HDUList(
            [_primary(codename, product.description), product.to_hdu()]
        )
    return files


def caldb_index_lines(files: dict[str, fits.HDUList]) -> list[str]:
    """A caldb.indx-like listing: ``codename  valid-date  valid-time  filename  ext``."""
    lines = []
    for filename, hdul in sorted(files.items()):
        header = hdul[1].header
        lines.append(
            f"{header['CCNM0001']:<10s} {header['CVSD0001']} {header['CVST0001']} "
            f"{filename} 1 {header['CBD10001']}"
        )
    return lines


__all__ = [
    "CODENAMES",
    "BadPixels",
    "Cti",
    "EffectiveArea",
    "EventGrades",
    "Gain",
    "Geometry",
    "Pedestal",
    "Psf",
    "Resolution",
    "Selection",
    "Vignetting",
    "caldb_filename",
    "caldb_index_lines",
    "calibration_from_hdulist",
    "model_caldb_hdulists",
    "model_calibrations",
    "require_calibration",
]


def require_calibration(calibration: Mapping[str, Any], codename: str, brick: str) -> Any:
    """The calibration product ``codename``, or BadInput naming what ``brick`` lacks."""
    try:
        product = calibration[codename]
    except KeyError:
        raise BadInput(
            f"brick {brick} needs CALDB {codename}; given {sorted(calibration)}",
            codename=codename,
        ) from None
    expected = CODENAMES[codename]
    if not isinstance(product, expected):
        raise BadInput(
            f"brick {brick}: CALDB {codename} is a {type(product).__name__}, "
            f"expected {expected.__name__}",
            codename=codename,
        )
    return product
