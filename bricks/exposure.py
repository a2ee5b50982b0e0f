"""Exposure map: good time × attitude × bad pixels × vignetting, on the sky grid.

Modelled on Swift-XRT's ``xrtexpomap``: the attitude within the GTIs is binned into a few
distinct pointings (:func:`bricks.detect_frame.observation_pointings`); for each, every
sky pixel centre is mapped back onto the detector (an inverse mapping, so a rotated
detector leaves no moiré holes) and picks up the detector's weight there: zero on bad
pixels, on their neighbours (whose events ``calibrate`` flags and ``screen`` removes)
and on the untransmitted outermost rows and columns, the vignetting V(θ) elsewhere.
The map is in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field

from bricks.base import Brick, BrickConfig
from bricks.calibration import BadPixels, Geometry, Vignetting, with_neighbours
from bricks.detect_frame import (
    Pointing,
    events_hdu,
    image_wcs_header,
    observation_pointings,
    product_header,
    sky_wcs_of,
)
from bricks.errors import BadInput
from bricks.products import EXPMAP, L2_EVENTS
from bricks.wcs import SKY_NPIX, detector_to_sky_offsets, sky_to_detector_offsets

VERSION = "1.0.0"


class ExposureConfig(BrickConfig):
    """Parameters of the exposure brick.

    Parameters
    ----------
    position_step_pix
        Attitude grouping resolution, in sky pixels (13.45″).
    roll_step_deg
        Attitude grouping resolution in roll, in degrees.
    exclude_bad_neighbours
        Also zero the pixels next to bad pixels and columns (screen drops their events).
    """

    position_step_pix: float = Field(0.5, ge=0.01, le=100.0)
    roll_step_deg: float = Field(0.1, ge=0.001, le=90.0)
    exclude_bad_neighbours: bool = True


def detector_weight(
    badpix: BadPixels,
    vignetting: Vignetting,
    geometry: Geometry,
    exclude_bad_neighbours: bool = True,
) -> np.ndarray:
    """Relative efficiency of each detector pixel, indexed ``[rawy, rawx]``.

    Parameters
    ----------
    badpix, vignetting, geometry
        Calibrations (BADPIX, VIGNET, TELDEF).
    exclude_bad_neighbours
        Zero the 8 neighbours of every bad pixel too.

    Returns
    -------
    ndarray
        ``(npix, npix)`` floats in [0, 1]: vignetting, 0 where no event can be kept.
    """
    n = geometry.npix
    bad = np.asarray(badpix.mask(shape=(n, n)), dtype=bool)
    if exclude_bad_neighbours:
        bad = with_neighbours(bad)
    # L0: events on the outermost rows and columns are never transmitted.
    bad[[0, -1], :] = True
    bad[:, [0, -1]] = True
    raw = np.arange(n, dtype=float)
    dx = (raw[None, :] - geometry.axis_x) * geometry.plate_scale_arcsec / 60.0
    dy = (raw[:, None] - geometry.axis_y) * geometry.plate_scale_arcsec / 60.0
    weight = np.asarray(vignetting(np.hypot(dx, dy)), dtype=float)
    return np.where(bad, 0.0, weight)


def _bordered(weight: np.ndarray) -> np.ndarray:
    """``weight`` with a zero border, flattened: detector pixels clipped to −1 or n fall
    on the border, so a flat ``take`` replaces an inside test, a clipped gather, a ``where``."""
    ny, nx = weight.shape
    bordered = np.zeros((ny + 2, nx + 2))
    bordered[1:-1, 1:-1] = weight
    return bordered.ravel()


def _seen(
    p: Pointing,
    flat: np.ndarray,
    shape: tuple[int, int],
    geometry: Geometry,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """Detector weight seen at pointing ``p`` by the sky pixels centred on ``(xs, ys)``.

    ``xs``, ``ys`` broadcast together (a row and a column, or two equal shapes); the
    offsets turned by ``sky_to_detector_offsets``, then ``floor(axis + d + 0.5)`` in place.
    """
    ny, nx = shape
    rawx, rawy = sky_to_detector_offsets(xs - p.x, ys - p.y, p.roll_deg)
    rawx += geometry.axis_x
    rawx += 0.5
    np.floor(rawx, out=rawx)
    np.clip(rawx, -1.0, nx, out=rawx)
    rawy += geometry.axis_y
    rawy += 0.5
    np.floor(rawy, out=rawy)
    np.clip(rawy, -1.0, ny, out=rawy)
    rawy *= nx + 2
    rawy += rawx
    rawy += nx + 3  # (rawy + 1) (nx + 2) + rawx + 1: exact in float64
    return np.take(flat, rawy.astype(np.intp))


def exposure_on_sky(
    pointings: list[Pointing],
    weight: np.ndarray,
    geometry: Geometry,
    npix: int = SKY_NPIX,
    stride: int = 1,
) -> np.ndarray:
    """Sum over pointings of seconds × detector weight seen by each sky pixel.

    Parameters
    ----------
    pointings
        Distinct pointings with their good time.
    weight
        Detector weight ``[rawy, rawx]`` (:func:`detector_weight`).
    geometry
        Detector geometry (axis position in pixels).
    npix
        Side of the sky grid.
    stride
        Sample every ``stride``-th sky pixel along each axis, pixels
        ``stride // 2 + 1 + k · stride`` (FITS 1-based): each sample is the full-resolution
        map's value at that pixel. 1 (default): the map itself.

    Returns
    -------
    ndarray
        ``(n, n)`` float32 exposure in seconds, indexed ``[y, x]`` (0-based), with
        ``n = len(range(stride // 2 + 1, npix + 1, stride))`` (``npix`` for stride 1).
    """
    first = stride // 2 + 1
    n = len(range(first, npix + 1, stride))
    expmap = np.zeros((n, n))
    ny, nx = weight.shape
    flat = _bordered(weight)
    corners_x = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5]) - geometry.axis_x
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]) - geometry.axis_y
    for p in pointings:
        # Only the sky pixels within the turned detector's bounding box can see it.
        cx, cy = detector_to_sky_offsets(corners_x, corners_y, p.roll_deg)
        x0, x1 = max(int(p.x + cx.min()) - 2, 1), min(int(p.x + cx.max()) + 3, npix)
        y0, y1 = max(int(p.y + cy.min()) - 2, 1), min(int(p.y + cy.max()) + 3, npix)
        # the samples within the box
        kx0, kx1 = max(-(-(x0 - first) // stride), 0), min((x1 - first) // stride, n - 1)
        ky0, ky1 = max(-(-(y0 - first) // stride), 0), min((y1 - first) // stride, n - 1)
        if kx0 > kx1 or ky0 > ky1:
            continue
        xs = (first + stride * np.arange(kx0, kx1 + 1)).astype(float)
        ys = (first + stride * np.arange(ky0, ky1 + 1)).astype(float)
        seen = _seen(p, flat, (ny, nx), geometry, xs[None, :], ys[:, None])
        expmap[ky0 : ky1 + 1, kx0 : kx1 + 1] += p.seconds * seen
    return expmap.astype(np.float32)


def exposure_at(
    pointings: list[Pointing],
    weight: np.ndarray,
    geometry: Geometry,
    x: np.ndarray,
    y: np.ndarray,
) -> np.ndarray:
    """:func:`exposure_on_sky` at the sky pixels centred on ``(x, y)`` only.

    Parameters
    ----------
    pointings, weight, geometry
        As for :func:`exposure_on_sky`.
    x, y
        Pixel centres, integers (FITS 1-based), any shape.

    Returns
    -------
    ndarray
        Float32 seconds, the map's value at each pixel (the same sums in the same
        order), whatever the grid size: a few thousand pixels cost a fraction of a map.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    total = np.zeros(np.broadcast(x, y).shape)
    flat = _bordered(weight)
    for p in pointings:
        total += p.seconds * _seen(p, flat, weight.shape, geometry, x, y)
    return total.astype(np.float32)


@dataclass(frozen=True)
class ObservationExposure:
    """What an exposure map is made of: pointings, detector weight, geometry, sky WCS.

    Evaluates the map at full resolution (:meth:`map`), sampled (``stride``), or at a
    few pixels (:meth:`at`), all with the same values.
    """

    pointings: list[Pointing]
    weight: np.ndarray
    geometry: Geometry
    wcs: WCS

    def map(self, stride: int = 1) -> np.ndarray:
        """:func:`exposure_on_sky`, seconds."""
        return exposure_on_sky(self.pointings, self.weight, self.geometry, stride=stride)

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """:func:`exposure_at` at integer pixel centres (FITS 1-based), seconds."""
        return exposure_at(self.pointings, self.weight, self.geometry, x, y)

    @property
    def on_axis_seconds(self) -> float:
        """Seconds × the best detector weight: a sky pixel seen on axis throughout, s."""
        best = float(self.weight.max()) if self.weight.size else 0.0
        return float(sum(p.seconds for p in self.pointings)) * best


def observation_exposure(
    l2_events: fits.HDUList,
    calibration: dict,
    config: ExposureConfig,
) -> ObservationExposure:
    """The pointings, detector weight and WCS of an L2 observation's exposure map.

    Parameters
    ----------
    l2_events
        L2 file (EVENTS, GTI, ATTITUDE).
    calibration
        ``BADPIX``, ``VIGNET`` and ``TELDEF`` calibrations.
    config
        Brick parameters.
    """
    events = events_hdu(l2_events)
    wcs = sky_wcs_of(events)
    geometry = _calibration(calibration, "TELDEF")
    weight = detector_weight(
        _calibration(calibration, "BADPIX"),
        _calibration(calibration, "VIGNET"),
        geometry,
        config.exclude_bad_neighbours,
    )
    pointings = observation_pointings(
        l2_events, wcs, config.position_step_pix, config.roll_step_deg
    )
    return ObservationExposure(pointings, weight, geometry, wcs)


def exposure_map(
    l2_events: fits.HDUList,
    calibration: dict,
    config: ExposureConfig,
) -> tuple[np.ndarray, WCS, list[Pointing]]:
    """Exposure map of an L2 observation, its WCS and the pointings it sums.

    Parameters
    ----------
    l2_events
        L2 file (EVENTS, GTI, ATTITUDE).
    calibration
        ``BADPIX``, ``VIGNET`` and ``TELDEF`` calibrations.
    config
        Brick parameters.
    """
    exposure = observation_exposure(l2_events, calibration, config)
    return exposure.map(), exposure.wcs, exposure.pointings


def _calibration(calibration: dict, codename: str) -> object:
    try:
        return calibration[codename]
    except KeyError:
        raise BadInput(f"calibration {codename} is missing") from None


def _run(inputs: dict, calibration: dict, config: ExposureConfig) -> dict:
    l2_events = inputs["l2_events"]
    expmap, wcs, pointings = exposure_map(l2_events, calibration, config)
    header = product_header(
        l2_events["EVENTS"].header, f"mxt-exposure {VERSION}", "IMAGE", "EXPOSURE"
    )
    header.update(image_wcs_header(wcs))
    header["BUNIT"] = ("s", "exposure time per sky pixel")
    header["NPOINT"] = (len(pointings), "distinct attitude bins summed")
    header["VIGNAPP"] = (True, "vignetting applied")
    header["EXPMAX"] = (float(expmap.max()) if expmap.size else 0.0, "[s] map maximum")
    hdu = fits.PrimaryHDU(data=expmap, header=header)
    hdu.header["EXTNAME"] = "EXPOSURE"
    return {"expmap": fits.HDUList([hdu])}


BRICK = Brick(
    name="exposure",
    version=VERSION,
    inputs=(L2_EVENTS,),
    outputs=(EXPMAP,),
    caldb=("BADPIX", "VIGNET", "TELDEF"),
    config=ExposureConfig,
    run=_run,
)
