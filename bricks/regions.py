"""Source and background extraction regions shared by the light curve and the spectrum.

The source region is a circle about the detected position whose radius encloses a
chosen fraction of the PSF (or a configured radius); the background region is an
annulus about the same centre. With the lobster-eye PSF (cross arms and a diffuse
halo 30' wide) the annulus always holds some source photons, so the source counts
are corrected with the *effective* PSF fraction

    f_eff = f_src - f_bkg * A_src / A_bkg,

the fraction that survives background subtraction (XSPEC's ``S - B * BACKSCAL ratio``
gives ``s * f_eff``). Fractions and areas are integrated numerically over the part of
each region that falls on the live detector (its edges and bad columns), in detector
coordinates where the PSF model is defined.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import Field, model_validator

from bricks.base import BrickConfig
from bricks.calibration import Geometry
from bricks.errors import BadInput, Unprocessable
from bricks.wcs import SKY_REF_PIX, sky_to_detector_offsets

#: Live detector pixels: RAWX/RAWY 1-254 (the outermost rows and columns are not sent).
DETECTOR_FIRST_PIXEL, DETECTOR_LAST_PIXEL = 1, 254
#: Sampling step of the numerical region integrals, pixels (PSF core sigma is ~15 px).
GRID_STEP_PIX = 0.5


class RegionConfig(BrickConfig):
    """Extraction region parameters common to the light curve and the spectrum.

    Parameters
    ----------
    enclosed_fraction
        PSF fraction the source circle encloses (when ``src_radius_arcmin`` is unset).
    src_radius_arcmin
        Fixed source radius, arcmin; overrides ``enclosed_fraction``.
    bkg_inner_arcmin, bkg_outer_arcmin
        Background annulus radii, arcmin; the inner radius defaults to 1.6 times the
        source radius and the outer one to the inner plus 8'.
    """

    enclosed_fraction: float = Field(0.65, gt=0.05, lt=0.9)
    src_radius_arcmin: float | None = Field(None, gt=0.2, lt=25.0)
    bkg_inner_arcmin: float | None = Field(None, gt=0.2, lt=40.0)
    bkg_outer_arcmin: float | None = Field(None, gt=0.5, lt=45.0)

    @model_validator(mode="after")
    def _annulus_ordered(self) -> RegionConfig:
        inner, outer = self.bkg_inner_arcmin, self.bkg_outer_arcmin
        if inner is not None and outer is not None and outer <= inner:
            raise ValueError(f"bkg_outer_arcmin ({outer}) must exceed bkg_inner_arcmin ({inner})")
        return self


@dataclass(frozen=True)
class ExtractionRegions:
    """Source circle and background annulus, with their areas and PSF fractions.

    Attributes
    ----------
    x, y
        Centre, sky pixels.
    src_radius_pix, bkg_inner_pix, bkg_outer_pix
        Radii, sky pixels.
    src_area_pix, bkg_area_pix
        Live detector area inside each region, pixels^2.
    psf_frac_src, psf_frac_bkg
        PSF fraction falling in each region's live area.
    offaxis_arcmin
        Off-axis angle of the source, arcmin.
    plate_scale_arcsec
        Arcsec per pixel.
    """

    x: float
    y: float
    src_radius_pix: float
    bkg_inner_pix: float
    bkg_outer_pix: float
    src_area_pix: float
    bkg_area_pix: float
    psf_frac_src: float
    psf_frac_bkg: float
    offaxis_arcmin: float
    plate_scale_arcsec: float

    @property
    def area_ratio(self) -> float:
        """Source area over background area (the BACKSCAL ratio)."""
        return self.src_area_pix / self.bkg_area_pix if self.bkg_area_pix > 0 else 0.0

    @property
    def psf_frac_effective(self) -> float:
        """PSF fraction left after background subtraction (module docstring)."""
        return self.psf_frac_src - self.psf_frac_bkg * self.area_ratio

    def masks(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (in source, in background) of events at sky pixels ``x, y``."""
        r2 = (np.asarray(x, dtype=np.float64) - self.x) ** 2 + (
            np.asarray(y, dtype=np.float64) - self.y
        ) ** 2
        in_src = r2 <= self.src_radius_pix**2
        in_bkg = (r2 >= self.bkg_inner_pix**2) & (r2 <= self.bkg_outer_pix**2)
        return in_src, in_bkg

    def keywords(self) -> dict[str, Any]:
        """FITS keywords describing the regions (for every product extracted with them)."""
        scale = self.plate_scale_arcsec / 60.0
        return {
            "SRC_X": (round(self.x, 4), "[pixel] source region centre, sky X"),
            "SRC_Y": (round(self.y, 4), "[pixel] source region centre, sky Y"),
            "SRC_RAD": (round(self.src_radius_pix * scale, 4), "[arcmin] source radius"),
            "BKG_RIN": (round(self.bkg_inner_pix * scale, 4), "[arcmin] bkg inner radius"),
            "BKG_ROUT": (round(self.bkg_outer_pix * scale, 4), "[arcmin] bkg outer radius"),
            "PSFFRAC": (round(self.psf_frac_src, 6), "PSF fraction in the source region"),
            "PSFFRBKG": (round(self.psf_frac_bkg, 6), "PSF fraction in the bkg region"),
            "PSFFREFF": (round(self.psf_frac_effective, 6), "PSF fraction after bkg subtr."),
            "OFFAXIS": (round(self.offaxis_arcmin, 4), "[arcmin] source off-axis angle"),
        }


def _geometry(calibration: Mapping[str, Any]) -> Geometry:
    return calibration.get("TELDEF") or Geometry.model()


@functools.lru_cache(maxsize=16)  # PSF objects are frozen: same PSF, same answer
def radius_enclosing(psf: Any, fraction: float) -> float:
    """Radius of the circle about the PSF centre enclosing ``fraction``, arcmin."""
    radii = np.linspace(0.05, 45.0, 900)  # 0.05' steps: interpolation error < 1e-4
    enclosed = np.maximum.accumulate(np.asarray(psf.enclosed_fraction(radii), dtype=float))
    if fraction > enclosed[-1]:
        raise BadInput(
            f"enclosed_fraction {fraction} is beyond the PSF's {enclosed[-1]:.3f} at 45'"
        )
    return float(np.interp(fraction, enclosed, radii))


@functools.lru_cache(maxsize=16)  # the PSF sampling is the same for every source
def psf_grid(
    psf: Any, outer_pix: float, scale_arcmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The integration grid about a source, out to ``outer_pix``, and the PSF on it.

    Parameters
    ----------
    psf
        The PSF calibration (``density(dx_arcmin, dy_arcmin)`` per arcmin²).
    outer_pix
        Half-width of the grid, detector pixels (cells of ``GRID_STEP_PIX``).
    scale_arcmin
        Plate scale, arcmin per pixel.

    Returns
    -------
    gx, gy, r2, weight
        Offsets along +RAWX, +RAWY (pixels), their squared radius (pixels²) and the
        PSF fraction in each cell; read-only, shared by every call with these inputs.
    """
    steps = np.arange(-outer_pix, outer_pix + GRID_STEP_PIX, GRID_STEP_PIX)
    shape = (steps.size, steps.size)
    # gx varies along axis 1, gy along axis 0 (meshgrid "xy"): read-only broadcast views
    gx = np.broadcast_to(steps[None, :], shape)
    gy = np.broadcast_to(steps[:, None], shape)
    squares = steps**2
    r2 = squares[None, :] + squares[:, None]  # gx**2 + gy**2, element by element
    # the density is elementwise: a row and a column of offsets broadcast to the grid,
    # so factors depending on one axis only (the PSF arms) are evaluated per axis
    offsets = steps * scale_arcmin
    density = np.asarray(psf.density(offsets[None, :], offsets[:, None]), dtype=float)
    if density.shape != shape:
        density = np.broadcast_to(density, shape).copy()
    weight = density * GRID_STEP_PIX**2 * scale_arcmin**2  # PSF density is per arcmin^2
    for array in (r2, weight):
        array.setflags(write=False)
    return gx, gy, r2, weight


def _live_detector(rawx: np.ndarray, rawy: np.ndarray, bad_columns: np.ndarray) -> np.ndarray:
    """Live pixels of the grid ``rawx`` (columns, along axis 1) × ``rawy`` (rows, axis 0).

    The tests of each axis are made on its own offsets and combined once: the same
    booleans as testing every grid point.
    """
    lo, hi = DETECTOR_FIRST_PIXEL - 0.5, DETECTOR_LAST_PIXEL + 0.5
    live_x = (rawx >= lo) & (rawx < hi)
    live_y = (rawy >= lo) & (rawy < hi)
    if bad_columns.size:
        live_x &= ~np.isin(np.floor(rawx + 0.5).astype(np.int64), bad_columns)
    return live_y[:, None] & live_x[None, :]


def _bad_columns(calibration: Mapping[str, Any]) -> np.ndarray:
    badpix = calibration.get("BADPIX")
    if badpix is None:
        return np.empty(0, dtype=np.int64)
    return np.asarray(badpix.bad_columns, dtype=np.int64)


@functools.lru_cache(maxsize=16)  # the light curve and the spectrum ask the same question
def region_integrals(
    psf: Any,
    scale_arcmin: float,
    src_pix: float,
    inner_pix: float,
    outer_pix: float,
    src_rawx: float,
    src_rawy: float,
    bad_columns: tuple[int, ...],
) -> tuple[float, float, float, float]:
    """Live areas (pixels²) and PSF fractions of the source and background regions.

    Numerical integrals on a fine grid about the source at detector pixel
    (``src_rawx``, ``src_rawy``), in detector coordinates; radii in detector pixels,
    ``scale_arcmin`` arcmin per pixel, ``bad_columns`` the dead RAWX columns.

    Returns
    -------
    src_area_pix, bkg_area_pix, psf_frac_src, psf_frac_bkg
    """
    cell = GRID_STEP_PIX**2
    gx, gy, r2, weight = psf_grid(psf, outer_pix, scale_arcmin)
    # the grid's columns are gx[0] along +RAWX, its rows gy[:, 0] along +RAWY
    live = _live_detector(
        src_rawx + gx[0], src_rawy + gy[:, 0], np.asarray(bad_columns, dtype=np.int64)
    )
    in_src = (r2 <= src_pix**2) & live
    in_bkg = (r2 >= inner_pix**2) & (r2 <= outer_pix**2) & live
    return (
        float(np.count_nonzero(in_src) * cell),
        float(np.count_nonzero(in_bkg) * cell),
        float(weight[in_src].sum()),
        float(weight[in_bkg].sum()),
    )


def build_regions(
    events_header: fits.Header,
    position: Mapping[str, Any],
    calibration: Mapping[str, Any],
    config: RegionConfig,
) -> ExtractionRegions:
    """Source and background regions about ``position`` with their live areas and PSF fractions.

    Parameters
    ----------
    events_header
        The L2 ``EVENTS`` header (``PA_PNT``, deg, orients the detector on the sky).
    position
        The ``position`` product: ``x``, ``y`` in sky pixels.
    calibration
        Needs ``PSF``; uses ``TELDEF`` (else the model geometry) and ``BADPIX`` when
        present.
    config
        Region parameters.
    """
    try:
        x, y = float(position["x"]), float(position["y"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"position needs numeric sky pixels 'x' and 'y': {exc}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise BadInput(f"position x/y must be finite, got ({x}, {y})")
    psf = calibration["PSF"]
    geometry = _geometry(calibration)
    scale_arcmin = geometry.plate_scale_arcsec / 60.0
    src_arcmin = config.src_radius_arcmin or radius_enclosing(psf, config.enclosed_fraction)
    inner_arcmin = config.bkg_inner_arcmin or 1.6 * src_arcmin
    outer_arcmin = config.bkg_outer_arcmin or inner_arcmin + 8.0
    if inner_arcmin < src_arcmin:
        raise BadInput(
            f"bkg_inner_arcmin ({inner_arcmin}) is inside the source radius ({src_arcmin:.2f}')"
        )
    roll = float(events_header.get("PA_PNT", 0.0))
    src_dx, src_dy = sky_to_detector_offsets(
        np.float64(x - SKY_REF_PIX), np.float64(y - SKY_REF_PIX), roll
    )
    src_rawx, src_rawy = geometry.axis_x + src_dx, geometry.axis_y + src_dy
    offaxis = float(np.hypot(src_dx, src_dy) * scale_arcmin)

    outer_pix = outer_arcmin / scale_arcmin
    src_area, bkg_area, psf_src, psf_bkg = region_integrals(
        psf,
        scale_arcmin,
        src_arcmin / scale_arcmin,
        inner_arcmin / scale_arcmin,
        outer_pix,
        float(src_rawx),
        float(src_rawy),
        tuple(_bad_columns(calibration).tolist()),
    )
    regions = ExtractionRegions(
        x=x,
        y=y,
        src_radius_pix=src_arcmin / scale_arcmin,
        bkg_inner_pix=inner_arcmin / scale_arcmin,
        bkg_outer_pix=outer_pix,
        src_area_pix=src_area,
        bkg_area_pix=bkg_area,
        psf_frac_src=psf_src,
        psf_frac_bkg=psf_bkg,
        offaxis_arcmin=offaxis,
        plate_scale_arcsec=scale_arcmin * 60.0,
    )
    if regions.src_area_pix <= 0 or regions.psf_frac_effective <= 0.01:
        raise Unprocessable(
            f"source region at sky ({x:.1f}, {y:.1f}) is off the live detector "
            f"(live area {regions.src_area_pix:.0f} pix, PSF fraction "
            f"{regions.psf_frac_effective:.3f})"
        )
    return regions


def events_table(l2_events: fits.HDUList) -> fits.BinTableHDU:
    """The ``EVENTS`` extension of an L2 event list, with a precise error if absent."""
    try:
        return l2_events["EVENTS"]
    except KeyError:
        raise BadInput("l2_events has no EVENTS extension") from None


def good_time_intervals(l2_events: fits.HDUList) -> np.ndarray:
    """GTIs as an ``(n, 2)`` array of [START, STOP], mission seconds, sorted."""
    try:
        gti = l2_events["GTI"].data
    except KeyError:
        raise BadInput("l2_events has no GTI extension") from None
    if gti is None or len(gti) == 0:
        return np.empty((0, 2))
    for column in ("START", "STOP"):
        if column not in gti.columns.names:
            raise BadInput(f"GTI extension has no {column} column")
    intervals = np.column_stack([gti["START"], gti["STOP"]]).astype(np.float64)
    return intervals[np.argsort(intervals[:, 0])]


def dead_time_correction(header: fits.Header) -> float:
    """LIVETIME / ONTIME (1 when either is absent or zero)."""
    ontime, livetime = header.get("ONTIME"), header.get("LIVETIME")
    if not ontime or not livetime:
        return 1.0
    return float(livetime) / float(ontime)


def is_detection(position: Mapping[str, Any]) -> bool:
    """Whether the ``position`` product holds a detected source."""
    return position.get("status") == "detected"


def extraction_status(
    position: Mapping[str, Any], events: fits.BinTableHDU, intervals: np.ndarray
) -> str:
    """``ok``, ``no_detection`` (no source to extract) or ``no_events`` (nothing observed)."""
    if not is_detection(position):
        return "no_detection"
    if events.data is None or len(events.data) == 0 or len(intervals) == 0:
        return "no_events"
    return "ok"


def live_exposure(intervals: np.ndarray, header: fits.Header) -> float:
    """Live good time: GTI total times the dead-time correction, s."""
    good = float(np.sum(intervals[:, 1] - intervals[:, 0])) if len(intervals) else 0.0
    return good * dead_time_correction(header)


def require_columns(events: fits.BinTableHDU, names: tuple[str, ...]) -> None:
    """Raise :class:`BadInput` naming the first of ``names`` the EVENTS table lacks."""
    present = events.columns.names
    for name in names:
        if name not in present:
            raise BadInput(f"l2_events EVENTS has no {name} column")
