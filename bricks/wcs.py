"""The sky-pixel convention shared by coordinates and every product, and the
vectorised gnomonic projections behind it.

Sky X/Y are pixels of the detector's plate scale (≈ 13.45″) on a 512 × 512 grid, TAN
projection about the nominal pointing (RA_PNT, DEC_PNT) at reference pixel
(256.5, 256.5), north up and east left (the X increment is negative).

Standard coordinates (ξ, η) are the gnomonic tangent-plane coordinates in radians, ξ
towards the east and η towards the north.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.wcs import WCS

from bricks.calibration import Geometry

SKY_NPIX = 512
SKY_REF_PIX = 256.5
SKY_PIXEL_DEG = Geometry.model().plate_scale_arcsec / 3600.0


def radec_to_standard(
    ra_deg: np.ndarray, dec_deg: np.ndarray, ra0_deg: np.ndarray, dec0_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of (RA, Dec) about (RA0, Dec0).

    Parameters
    ----------
    ra_deg, dec_deg
        Sky positions, degrees.
    ra0_deg, dec0_deg
        Tangent point(s), degrees (scalars or arrays broadcasting with the positions).

    Returns
    -------
    xi, eta
        Standard coordinates, radians (ξ east, η north). Points more than 90° from the
        tangent point have no gnomonic image and come out as NaN.
    """
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    ra0 = np.radians(ra0_deg)
    dec0 = np.radians(dec0_deg)
    dra = ra - ra0
    cos_dec = np.cos(dec)
    sin_dec0, cos_dec0 = np.sin(dec0), np.cos(dec0)
    cos_c = np.sin(dec) * sin_dec0 + cos_dec * cos_dec0 * np.cos(dra)
    cos_c = np.where(cos_c > 0.0, cos_c, np.nan)
    xi = cos_dec * np.sin(dra) / cos_c
    eta = (cos_dec0 * np.sin(dec) - sin_dec0 * cos_dec * np.cos(dra)) / cos_c
    return xi, eta


def standard_to_radec(
    xi: np.ndarray, eta: np.ndarray, ra0_deg: np.ndarray, dec0_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: standard coordinates (radians) to (RA, Dec) degrees.

    RA comes out in [0, 360); the formula stays exact at the poles and across RA = 0.
    """
    ra0 = np.radians(ra0_deg)
    dec0 = np.radians(dec0_deg)
    sin_dec0, cos_dec0 = np.sin(dec0), np.cos(dec0)
    denom = cos_dec0 - eta * sin_dec0
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(sin_dec0 + eta * cos_dec0, np.hypot(xi, denom))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def sky_pixels(
    ra_deg: np.ndarray, dec_deg: np.ndarray, ra_pnt_deg: float, dec_pnt_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sky X/Y pixels (1-based FITS convention) of (RA, Dec) on the grid about the pointing."""
    xi, eta = radec_to_standard(ra_deg, dec_deg, ra_pnt_deg, dec_pnt_deg)
    x = SKY_REF_PIX - np.degrees(xi) / SKY_PIXEL_DEG
    y = SKY_REF_PIX + np.degrees(eta) / SKY_PIXEL_DEG
    return x, y


def sky_to_radec(
    x: np.ndarray, y: np.ndarray, ra_pnt_deg: float, dec_pnt_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) degrees of sky pixels X/Y on the grid about the pointing."""
    xi = np.radians((SKY_REF_PIX - np.asarray(x, dtype=np.float64)) * SKY_PIXEL_DEG)
    eta = np.radians((np.asarray(y, dtype=np.float64) - SKY_REF_PIX) * SKY_PIXEL_DEG)
    return standard_to_radec(xi, eta, ra_pnt_deg, dec_pnt_deg)


def sky_wcs(ra_pnt_deg: float, dec_pnt_deg: float) -> WCS:
    """The 2-D image WCS of the sky grid about the nominal pointing."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [float(ra_pnt_deg), float(dec_pnt_deg)]
    wcs.wcs.crpix = [SKY_REF_PIX, SKY_REF_PIX]
    wcs.wcs.cdelt = [-SKY_PIXEL_DEG, SKY_PIXEL_DEG]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def event_wcs_keywords(
    ra_pnt: float, dec_pnt: float, x_col_index: int, y_col_index: int
) -> dict[str, Any]:
    """OGIP event-file WCS keywords for the EVENTS X and Y columns.

    Parameters
    ----------
    ra_pnt, dec_pnt
        Nominal pointing, degrees.
    x_col_index, y_col_index
        1-based FITS column numbers of X and Y.
    """
    keywords: dict[str, Any] = {}
    for n, ctype, crval, cdelt in (
        (x_col_index, "RA---TAN", ra_pnt, -SKY_PIXEL_DEG),
        (y_col_index, "DEC--TAN", dec_pnt, SKY_PIXEL_DEG),
    ):
        keywords[f"TCTYP{n}"] = ctype
        keywords[f"TCUNI{n}"] = "deg"
        keywords[f"TCRVL{n}"] = float(crval)
        keywords[f"TCDLT{n}"] = cdelt
        keywords[f"TCRPX{n}"] = SKY_REF_PIX
        keywords[f"TLMIN{n}"] = 1
        keywords[f"TLMAX{n}"] = SKY_NPIX
    keywords["RADECSYS"] = "ICRS"
    keywords["EQUINOX"] = 2000.0
    return keywords


def _column_number(header: Mapping[str, Any], name: str) -> int:
    for key, value in header.items():
        if key.startswith("TTYPE") and str(value).strip().upper() == name:
            return int(key[5:])
    raise ValueError(f"EVENTS header has no column {name!r}")


def sky_wcs_from_events_header(header: Mapping[str, Any]) -> WCS:
    """Rebuild the 2-D sky WCS from the EVENTS header's X/Y column keywords."""
    nx, ny = _column_number(header, "X"), _column_number(header, "Y")
    missing = [
        k for n in (nx, ny) for k in (f"TCRVL{n}", f"TCDLT{n}", f"TCRPX{n}") if k not in header
    ]
    if missing:
        raise ValueError(f"EVENTS header lacks the WCS keyword(s) {missing}")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [header.get(f"TCTYP{nx}", "RA---TAN"), header.get(f"TCTYP{ny}", "DEC--TAN")]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [header[f"TCRVL{nx}"], header[f"TCRVL{ny}"]]
    wcs.wcs.cdelt = [header[f"TCDLT{nx}"], header[f"TCDLT{ny}"]]
    wcs.wcs.crpix = [header[f"TCRPX{nx}"], header[f"TCRPX{ny}"]]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def offaxis_arcmin(
    x: np.ndarray, y: np.ndarray, x0: float = SKY_REF_PIX, y0: float = SKY_REF_PIX
) -> np.ndarray:
    """Angular distance (arcmin) of sky pixels from (x0, y0), default the pointing.

    A flat-sky approximation, accurate to < 0.1 % within the 1° field.
    """
    return np.hypot(np.asarray(x) - x0, np.asarray(y) - y0) * SKY_PIXEL_DEG * 60.0


def detector_to_sky_offsets(
    dx_pix: np.ndarray, dy_pix: np.ndarray, roll_deg: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate detector offsets (+RAWX, +RAWY) into sky-grid offsets (+X west, +Y north).

    The one statement of the roll geometry: +RAWY points to position angle ROLL (north
    through east), +RAWX to ROLL − 90° (L0_FORMAT.md), so a detector offset (dx, dy)
    lands at sky offset ``(dx cos R − dy sin R, dx sin R + dy cos R)``.

    Parameters
    ----------
    dx_pix, dy_pix
        Offsets along +RAWX and +RAWY, any unit (pixels in practice).
    roll_deg
        Position angle of +RAWY, degrees (scalar or per offset).

    Returns
    -------
    tuple of ndarray
        Offsets along sky X and Y, same unit.
    """
    roll = np.radians(roll_deg)
    c, s = np.cos(roll), np.sin(roll)
    return dx_pix * c - dy_pix * s, dx_pix * s + dy_pix * c


def sky_to_detector_offsets(
    dx_sky: np.ndarray, dy_sky: np.ndarray, roll_deg: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`detector_to_sky_offsets`: sky-grid offsets to (+RAWX, +RAWY)."""
    roll = np.radians(roll_deg)
    c, s = np.cos(roll), np.sin(roll)
    return dx_sky * c + dy_sky * s, -dx_sky * s + dy_sky * c


def detector_to_standard(
    dx_pix: np.ndarray, dy_pix: np.ndarray, roll_deg: np.ndarray, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """Detector offsets from the optical axis (pixels along +RAWX, +RAWY) to (ξ, η) radians.

    Sky +X is west, so ξ = −X and η = +Y pixels times the plate scale.
    """
    x, y = detector_to_sky_offsets(dx_pix, dy_pix, roll_deg)
    scale = geometry.pixel_radians
    return -scale * x, scale * y


def standard_to_detector(
    xi: np.ndarray, eta: np.ndarray, roll_deg: np.ndarray, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`detector_to_standard`: (ξ, η) radians to pixel offsets."""
    scale = geometry.pixel_radians
    return sky_to_detector_offsets(-xi / scale, eta / scale, roll_deg)


def tangent_basis(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3, 3) of the pointing, east and north at (RA, Dec), degrees.

    ``basis[..., 0, :]`` points at (RA, Dec); ``[..., 1, :]`` is east and ``[..., 2, :]``
    north in its tangent plane, so a gnomonic point (ξ, η) has the direction
    ``basis[0] + ξ · basis[1] + η · basis[2]``.
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_ra, sin_ra, cos_dec, sin_dec = np.cos(ra), np.sin(ra), np.cos(dec), np.sin(dec)
    zero = np.zeros_like(ra)
    pointing = np.stack([cos_dec * cos_ra, cos_dec * sin_ra, sin_dec], axis=-1)
    east = np.stack([-sin_ra, cos_ra, zero], axis=-1)
    north = np.stack([-sin_dec * cos_ra, -sin_dec * sin_ra, cos_dec], axis=-1)
    return np.stack([pointing, east, north], axis=-2)


def vectors_to_radec(
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(RA in [0, 360), Dec) degrees of direction vectors (any length)."""
    ra = np.degrees(np.arctan2(vy, vx))
    ra[ra < 0.0] += 360.0
    return ra, np.degrees(np.arctan2(vz, np.hypot(vx, vy)))


def vectors_to_sky_pixels(
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, ra_pnt_deg: float, dec_pnt_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sky X/Y pixels of direction vectors (any length) on the grid about the pointing."""
    pointing, east, north = tangent_basis(ra_pnt_deg, dec_pnt_deg)
    depth = vx * pointing[0] + vy * pointing[1] + vz * pointing[2]
    depth = np.where(depth > 0.0, depth, np.nan)  # behind the tangent plane: no image
    per_pixel = np.radians(SKY_PIXEL_DEG)
    x = SKY_REF_PIX - (vx * east[0] + vy * east[1] + vz * east[2]) / (depth * per_pixel)
    y = SKY_REF_PIX + (vx * north[0] + vy * north[1] + vz * north[2]) / (depth * per_pixel)
    return x, y
