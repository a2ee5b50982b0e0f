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

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from bricks.base import Brick, BrickConfig
from bricks.calibration import BadPixels, Geometry, Vignetting
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
from bricks.wcs import SKY_NPIX, detector_to_sky_offsets

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

    position_step_pix: float = 0.5
    roll_step_deg: float = 0.1
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
        bad = _dilate_3x3(bad)
    # L0: events on the outermost rows and columns are never transmitted.
    bad[[0, -1], :] = True
    bad[:, [0, -1]] = True
    raw = np.arange(n, dtype=float)
    dx = (raw[None, :] - geometry.axis_x) * geometry.plate_scale_arcsec / 60.0
    dy = (raw[:, None] - geometry.axis_y) * geometry.plate_scale_arcsec / 60.0
    weight = np.asarray(vignetting(np.hypot(dx, dy)), dtype=float)
    return np.where(bad, 0.0, weight)


def _dilate_3x3(mask: np.ndarray) -> np.ndarray:
    """``mask`` or any of its 8 neighbours (``ndimage.binary_dilation`` with a 3×3 block,
    as nine shifted ORs of a zero-bordered copy: a tenth of its time)."""
    ny, nx = mask.shape
    bordered = np.zeros((ny + 2, nx + 2), dtype=bool)
    bordered[1:-1, 1:-1] = mask
    rows = bordered[:-2] | bordered[1:-1] | bordered[2:]
    return rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]


def exposure_on_sky(
    pointings: list[Pointing],
    weight: np.ndarray,
    geometry: Geometry,
    npix: int = SKY_NPIX,
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

    Returns
    -------
    ndarray
        ``(npix, npix)`` float32 exposure in seconds, indexed ``[y, x]`` (0-based).
    """
    expmap = np.zeros((npix, npix))
    ny, nx = weight.shape
    # A zero border: detector pixels clipped to -1 or n fall on it, so a flat ``take``
    # replaces the inside test, the clipped 2-D gather and the ``where``.
    bordered = np.zeros((ny + 2, nx + 2))
    bordered[1:-1, 1:-1] = weight
    flat = bordered.ravel()
    corners_x = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5]) - geometry.axis_x
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]) - geometry.axis_y
    for p in pointings:
        # Only the sky pixels within the turned detector's bounding box can see it.
        cx, cy = detector_to_sky_offsets(corners_x, corners_y, p.roll_deg)
        x0, x1 = max(int(p.x + cx.min()) - 2, 1), min(int(p.x + cx.max()) + 3, npix)
        y0, y1 = max(int(p.y + cy.min()) - 2, 1), min(int(p.y + cy.max()) + 3, npix)
        if x0 > x1 or y0 > y1:
            continue
        xs = np.arange(x0, x1 + 1, dtype=float)
        ys = np.arange(y0, y1 + 1, dtype=float)
        # the arithmetic of sky_to_detector_offsets, then floor(axis + d + 0.5), in place
        dx_sky, dy_sky = xs[None, :] - p.x, ys[:, None] - p.y
        c, s = np.cos(np.radians(p.roll_deg)), np.sin(np.radians(p.roll_deg))
        rawx = np.add(dx_sky * c, dy_sky * s)
        rawx += geometry.axis_x
        rawx += 0.5
        np.floor(rawx, out=rawx)
        np.clip(rawx, -1.0, nx, out=rawx)
        rawy = np.add(-dx_sky * s, dy_sky * c)
        rawy += geometry.axis_y
        rawy += 0.5
        np.floor(rawy, out=rawy)
        np.clip(rawy, -1.0, ny, out=rawy)
        rawy *= nx + 2
        rawy += rawx
        rawy += nx + 3  # (rawy + 1) (nx + 2) + rawx + 1: exact in float64
        seen = np.take(flat, rawy.astype(np.intp))
        expmap[y0 - 1 : y1, x0 - 1 : x1] += p.seconds * seen
    return expmap.astype(np.float32)


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
    return exposure_on_sky(pointings, weight, geometry), wcs, pointings


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
