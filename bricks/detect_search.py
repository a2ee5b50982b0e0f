"""Source search: counts image and PSF-matched detection against a local background.

The counts image is correlated (FFT) with the lobster-eye PSF, cross arms turned to
the sky by the roll. Under a background of ``b`` counts per pixel the filtered image
``S = Σ K·C`` has mean ``b·ΣK`` and variance ``b·ΣK²`` (sums over the kernel within
the detector footprint), so ``(S − b·ΣK) / sqrt(b·ΣK²)`` is the significance of a
point source at each pixel, and ``(S − b·ΣK) / ΣK²`` its counts. ``b`` is estimated
locally: a wide box average of the image over the footprint with the candidate
sources masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from bricks.calibration import Psf
from bricks.detect_frame import sky_to_detector


@dataclass(frozen=True)
class Candidate:
    """A source found in the image.

    Parameters
    ----------
    x, y
        Sky pixel (FITS 1-based) of the significance peak.
    counts
        Matched-filter estimate of the source counts (whole PSF).
    significance
        Gaussian-equivalent significance of the peak, in σ.
    background
        Local background at the peak, counts per sky pixel.
    """

    x: float
    y: float
    counts: float
    significance: float
    background: float


def counts_image(x: np.ndarray, y: np.ndarray, npix: int) -> np.ndarray:
    """Counts per sky pixel, ``[y, x]`` 0-based, from FITS 1-based X/Y (``bincount``).

    Parameters
    ----------
    x, y
        Event sky positions, pixels (FITS 1-based: pixel 1 spans 0.5–1.5).
    npix
        Side of the image.
    """
    ix = np.floor(np.asarray(x, dtype=np.float64) - 0.5).astype(np.int64)
    iy = np.floor(np.asarray(y, dtype=np.float64) - 0.5).astype(np.int64)
    ok = (ix >= 0) & (ix < npix) & (iy >= 0) & (iy < npix)
    flat = np.bincount(iy[ok] * npix + ix[ok], minlength=npix * npix)
    return flat.reshape(npix, npix).astype(np.int32)


def psf_kernel(psf: Psf, roll_deg: float, pixel_arcmin: float, radius_arcmin: float) -> np.ndarray:
    """The PSF on the sky grid: fraction of a source's counts per pixel, ``[dy, dx]``.

    Parameters
    ----------
    psf
        PSF calibration (density along the detector axes, per arcmin²).
    roll_deg
        Position angle of +RAWY, degrees: turns the cross arms onto the sky.
    pixel_arcmin
        Sky pixel side, arcmin.
    radius_arcmin
        Half-side of the kernel, arcmin.
    """
    half = int(np.ceil(radius_arcmin / pixel_arcmin))
    offsets = np.arange(-half, half + 1) * pixel_arcmin
    du, dv = sky_to_detector(offsets[None, :], offsets[:, None], roll_deg)
    return np.asarray(psf.density(du, dv), dtype=float) * pixel_arcmin**2


def _correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Cross-correlation with a kernel, same shape as the image (FFT)."""
    return fftconvolve(image, kernel[::-1, ::-1], mode="same")


def local_background(
    image: np.ndarray, footprint: np.ndarray, mask: np.ndarray, box_pix: int
) -> np.ndarray:
    """Local background, counts per pixel: box mean over unmasked footprint pixels.

    Where the box holds too few usable pixels the footprint-wide mean is used.
    """
    usable = footprint & ~mask
    if not np.any(usable):
        usable = footprint
    global_mean = float(image[usable].sum()) / max(int(usable.sum()), 1)
    num = ndimage.uniform_filter(np.where(usable, image, 0).astype(float), box_pix, mode="constant")
    den = ndimage.uniform_filter(usable.astype(float), box_pix, mode="constant")
    enough = den > 0.2
    background = np.where(enough, num / np.where(enough, den, 1.0), global_mean)
    return np.where(footprint, background, 0.0)


def find_sources(
    image: np.ndarray,
    footprint: np.ndarray,
    kernel: np.ndarray,
    threshold_sigma: float,
    min_separation_pix: int,
    background_box_pix: int,
    mask_radius_pix: float,
    max_sources: int,
) -> list[Candidate]:
    """PSF-matched detection: peaks of the significance map above a threshold.

    Two passes: the first finds bright candidates with a background that includes
    them, the second re-estimates the background with them masked.

    Parameters
    ----------
    image
        Counts image ``[y, x]``.
    footprint
        Boolean map of the sky pixels the detector saw.
    kernel
        :func:`psf_kernel`.
    threshold_sigma
        Minimum significance of a source.
    min_separation_pix
        Peaks closer than this to a more significant one are the same source.
    background_box_pix
        Side of the background box, pixels.
    mask_radius_pix
        Radius masked around each candidate for the background estimate.
    max_sources
        Keep at most this many, the most significant first.

    Returns
    -------
    list of Candidate
        Most significant first; empty when nothing passes.
    """
    if image.sum() == 0 or not np.any(footprint):
        return []
    fp = footprint.astype(float)
    k_sum = _correlate(fp, kernel)
    k2_sum = _correlate(fp, kernel**2)
    filtered = _correlate(image.astype(float), kernel)
    auto = fftconvolve(kernel, kernel[::-1, ::-1], mode="full")
    # One count spread over the footprint: keeps the variance positive without background.
    floor = 1.0 / float(footprint.sum())
    mask = np.zeros_like(footprint)
    peaks: list[Candidate] = []
    for _ in range(2):
        background = np.maximum(local_background(image, footprint, mask, background_box_pix), floor)
        excess = filtered - background * k_sum
        sigma = np.where(
            footprint & (k2_sum > 0),
            excess / np.sqrt(np.maximum(background * k2_sum, 1e-30)),
            0.0,
        )
        peaks = _peaks(sigma, excess, k2_sum, background, threshold_sigma, min_separation_pix, auto)
        mask = _disc_mask(image.shape, peaks, mask_radius_pix)
    return peaks[:max_sources]


def _peaks(
    sigma: np.ndarray,
    excess: np.ndarray,
    k2_sum: np.ndarray,
    background: np.ndarray,
    threshold: float,
    separation: int,
    autocorrelation: np.ndarray,
) -> list[Candidate]:
    """Local maxima of the significance map above ``threshold``, most significant first.

    A bright source's cross arms and halo raise the filtered image far from its centre;
    each peak is therefore tested on its excess *beyond* what the brighter sources
    already accepted put there (their counts times the kernel's autocorrelation).
    """
    size = 2 * separation + 1
    is_max = (sigma == ndimage.maximum_filter(sigma, size=size, mode="constant")) & (
        sigma >= threshold
    )
    iy, ix = np.nonzero(is_max)
    order = np.argsort(-sigma[iy, ix])
    half_y, half_x = autocorrelation.shape[0] // 2, autocorrelation.shape[1] // 2
    accepted: list[Candidate] = []
    for i in order:
        y, x = int(iy[i]), int(ix[i])
        explained = 0.0
        for src in accepted:
            dy, dx = y + 1 - int(src.y), x + 1 - int(src.x)
            if abs(dy) <= half_y and abs(dx) <= half_x:
                explained += src.counts * autocorrelation[half_y + dy, half_x + dx]
        residual = excess[y, x] - explained
        significance = residual / np.sqrt(max(background[y, x] * k2_sum[y, x], 1e-30))
        if significance >= threshold:
            accepted.append(
                Candidate(
                    x=float(x + 1),
                    y=float(y + 1),
                    counts=float(residual / k2_sum[y, x]),
                    significance=float(significance),
                    background=float(background[y, x]),
                )
            )
    return sorted(accepted, key=lambda c: -c.significance)


def _disc_mask(shape: tuple[int, ...], peaks: list[Candidate], radius: float) -> np.ndarray:
    """Boolean map, True within ``radius`` pixels of any peak."""
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for p in peaks:
        mask |= (xx + 1 - p.x) ** 2 + (yy + 1 - p.y) ** 2 <= radius**2
    return mask
