"""Source search: counts image and PSF-matched detection against a local background.

The counts image is correlated (FFT) with the lobster-eye PSF, cross arms turned to
the sky by the roll. Under a background of ``b`` counts per pixel the filtered image
``S = Σ K·C`` has mean ``b·ΣK`` and variance ``b·ΣK²`` (sums over the kernel within
the detector footprint), so ``(S − b·ΣK) / sqrt(b·ΣK²)`` is the significance of a
point source at each pixel, and ``(S − b·ΣK) / ΣK²`` its counts. ``b`` is estimated
locally on a mesh of blocks with clipped means, the sources found so far masked
(:func:`local_background`); sources are taken one at a time, brightest first, each
removed from the filtered image before the next is sought (:func:`_clean_peaks`).

The detect brick runs the search on the image binned ``search_binning`` × ``search_binning``
(:func:`bin_image`; by default 4 × 4, 54″ pixels against a 3.4′ σ core) with the fraction of each
binned pixel the detector saw as footprint; a peak's position is refined to a fraction
of a pixel by a parabola (:func:`_peak_offset`), and the position fit that follows
works on the unbinned events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sfft

from bricks.calibration import Psf
from bricks.wcs import sky_to_detector_offsets


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
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = (x >= 0.5) & (x < npix + 0.5) & (y >= 0.5) & (y < npix + 0.5)
    # on the grid, x − 0.5 ≥ 0: truncation is the floor (in place: fewer event-sized arrays)
    shifted = y[ok]
    shifted -= 0.5
    index = shifted.astype(np.intp)
    index *= npix
    shifted = x[ok]
    shifted -= 0.5
    index += shifted.astype(np.intp)
    flat = np.bincount(index, minlength=npix * npix)
    return flat.reshape(npix, npix).astype(np.int32)


def bin_image(array: np.ndarray, factor: int) -> np.ndarray:
    """Sums over ``factor × factor`` blocks of ``array`` (zero-padded to a multiple).

    Parameters
    ----------
    array
        Image ``[y, x]`` (counts, or a 0/1 footprint).
    factor
        Side of a block, pixels; 1 returns ``array`` itself.
    """
    if factor == 1:
        return array
    ny, nx = array.shape
    by, bx = -(-ny // factor), -(-nx // factor)
    if (by * factor, bx * factor) != (ny, nx):
        array = np.pad(array, ((0, by * factor - ny), (0, bx * factor - nx)))
    # strided slices added in turn: a reduction over short strided axes costs ~4x more
    dtype = np.result_type(array.dtype, np.int64) if array.dtype.kind in "biu" else array.dtype
    rows = np.zeros((by, bx * factor), dtype=dtype)
    for i in range(factor):
        rows += array[i::factor]
    binned = np.zeros((by, bx), dtype=dtype)
    for j in range(factor):
        binned += rows[:, j::factor]
    return binned


def unbinned(candidate: Candidate, factor: int) -> Candidate:
    """A candidate found on a grid binned by ``factor``, in the unbinned grid's pixels.

    Binned pixel ``j`` (FITS 1-based) covers unbinned pixels ``factor (j − 1) + 1`` to
    ``factor j``: its centre is ``factor (j − 1) + (factor + 1) / 2``. The background is
    per unbinned pixel.
    """
    if factor == 1:
        return candidate
    return replace(
        candidate,
        x=factor * (candidate.x - 1.0) + 0.5 * (factor + 1),
        y=factor * (candidate.y - 1.0) + 0.5 * (factor + 1),
        background=candidate.background / factor**2,
    )


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
    du, dv = sky_to_detector_offsets(offsets[None, :], offsets[:, None], roll_deg)
    return np.asarray(psf.density(du, dv), dtype=float) * pixel_arcmin**2


@dataclass(frozen=True)
class MatchedFilter:
    """The correlations a matched-filter search needs, from one set of FFTs.

    Attributes
    ----------
    filtered
        Counts image correlated with the kernel.
    k_sum, k2_sum
        Footprint correlated with the kernel and with its square: ΣK and ΣK² over the
        part of the kernel that lies on the detector, at each pixel.
    autocorrelation
        Kernel autocorrelation ``A(d) = Σ K(u) K(u + d)``, centred: a source's filtered
        image per count.
    """

    filtered: np.ndarray
    k_sum: np.ndarray
    k2_sum: np.ndarray
    autocorrelation: np.ndarray


def matched_filter(image: np.ndarray, footprint: np.ndarray, kernel: np.ndarray) -> MatchedFilter:
    """Correlate the image and the footprint with the kernel (one shared set of FFTs).

    Parameters
    ----------
    image
        Counts image ``[y, x]``.
    footprint
        Boolean map of the sky pixels the detector saw, or the fraction of each pixel
        it saw.
    kernel
        :func:`psf_kernel` (odd sides).
    """
    ny, nx = image.shape
    ky, kx = kernel.shape
    # Only the central ``n`` samples of the linear correlation are kept; a circular one
    # of length L wraps sample ``i`` onto ``i ± L``, which misses them once
    # L ≥ n + k // 2, not the full n + k − 1: about a third fewer FFT pixels.
    shape = (sfft.next_fast_len(ny + ky // 2, True), sfft.next_fast_len(nx + kx // 2, True))

    def spectrum(array: np.ndarray) -> np.ndarray:
        return sfft.rfft2(array, s=shape, workers=1)

    def back(product: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        return sfft.irfft2(product, s=shape, workers=1)[rows, cols]

    flipped = spectrum(kernel[::-1, ::-1])
    flipped_square = spectrum((kernel**2)[::-1, ::-1])
    rows, cols = slice(ky // 2, ky // 2 + ny), slice(kx // 2, kx // 2 + nx)
    fp = spectrum(footprint.astype(float))
    return MatchedFilter(
        filtered=back(spectrum(image.astype(float)) * flipped, rows, cols),
        k_sum=back(fp * flipped, rows, cols),
        k2_sum=back(fp * flipped_square, rows, cols),
        autocorrelation=_autocorrelation_from(flipped, shape, kernel),
    )


def _autocorrelation_from(
    flipped: np.ndarray, shape: tuple[int, int], kernel: np.ndarray
) -> np.ndarray:
    """:func:`kernel_autocorrelation` from the flipped kernel's spectrum on ``shape``.

    ``|F|²`` is the circular autocorrelation (that of the flipped kernel is the
    kernel's: it is even); with ``L ≥ 2k − 1`` nothing wraps, and the two forward
    transforms of :func:`kernel_autocorrelation` are saved. Smaller grids fall back.
    """
    ky, kx = kernel.shape
    if shape[0] < 2 * ky - 1 or shape[1] < 2 * kx - 1:
        return kernel_autocorrelation(kernel)
    circular = sfft.irfft2(flipped * np.conj(flipped), s=shape, workers=1)
    return np.roll(circular, (ky - 1, kx - 1), axis=(0, 1))[: 2 * ky - 1, : 2 * kx - 1]


def kernel_autocorrelation(kernel: np.ndarray) -> np.ndarray:
    """Full autocorrelation of ``kernel``, ``(2 ky − 1, 2 kx − 1)``, centre at the middle.

    Its own FFT size, a quarter of the image's: computing it on the image's padded grid
    cost two of the matched filter's nine full-size transforms.
    """
    ky, kx = kernel.shape
    shape = (sfft.next_fast_len(2 * ky - 1, True), sfft.next_fast_len(2 * kx - 1, True))
    product = sfft.rfft2(kernel, s=shape, workers=1) * sfft.rfft2(
        kernel[::-1, ::-1], s=shape, workers=1
    )
    return sfft.irfft2(product, s=shape, workers=1)[: 2 * ky - 1, : 2 * kx - 1]


def _clipped_mean(rates: np.ndarray, block_area: float) -> np.ndarray:
    """Mean over the last axis of block rates, clipping three times those 3σ above it.

    NaN entries (unusable blocks) are ignored; fewer than 3 usable blocks give NaN. The
    Poisson σ of a block's rate is never taken below one count's worth, so sparse
    blocks (mostly zeros) are not clipped to nothing.
    """
    usable = np.isfinite(rates)
    values = np.where(usable, rates, 0.0)
    n = np.count_nonzero(usable, axis=-1)
    kept = usable
    level = values.sum(axis=-1) / np.maximum(n, 1)
    for _ in range(3):
        sigma = np.sqrt(np.maximum(level * block_area, 1.0)) / block_area
        candidate = usable & (values <= (level + 3.0 * sigma)[..., None])
        count = np.count_nonzero(candidate, axis=-1)
        new_kept = np.where((count > 0)[..., None], candidate, kept)
        if np.array_equal(new_kept, kept):
            break  # the same blocks again: so would be the level and later passes
        kept = new_kept
        level = (values * kept).sum(axis=-1) / np.maximum(np.count_nonzero(kept, axis=-1), 1)
    return np.where(n >= 3, level, np.nan)


def local_background(
    image: np.ndarray, footprint: np.ndarray, mask: np.ndarray, block_pix: int, window: int
) -> np.ndarray:
    """Local background, counts per pixel, robust to sources (a SExtractor-like mesh).

    The image is cut into ``block_pix`` square blocks; each block's rate is its counts
    over its usable area (footprint, outside ``mask``), kept where at least half the
    block is usable. The background of a block is the clipped mean of the rates in the
    ``window × window`` blocks about it (sources clip high); blocks without enough
    neighbours take the footprint-wide clipped mean; pixels interpolate between blocks.
    ``footprint`` is boolean, or the fraction of each (binned) pixel the detector saw;
    the result is the rate of a fully seen pixel, zero where nothing was seen.
    """
    seen_fraction = np.asarray(footprint, dtype=float)
    seen = seen_fraction > 0
    usable = np.where(mask, 0.0, seen_fraction)
    ny, nx = image.shape
    by, bx = -(-ny // block_pix), -(-nx // block_pix)
    counts = bin_image(np.where(usable > 0, image, 0), block_pix)
    area = bin_image(usable, block_pix)
    rates = np.where(area >= 0.5 * block_pix**2, counts / np.maximum(area, 1), np.nan)
    block_area = float(block_pix**2)
    overall = float(_clipped_mean(rates.ravel(), block_area))
    if not np.isfinite(overall):
        overall = float(image[seen].sum()) / max(float(seen_fraction.sum()), 1.0)
    half = window // 2
    padded = np.pad(rates, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
    local = _clipped_mean(windows.reshape(by, bx, window * window), block_area)
    local = np.where(np.isfinite(local), local, overall)
    # Bilinear between block centres: steps at block edges would make false peaks.
    per_pixel = _interpolate_blocks(local, block_pix)[:ny, :nx]
    return np.where(seen, per_pixel, 0.0)


def _block_weights(n_blocks: int, block_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: the lower and upper block and the upper one's weight."""
    coord = np.clip((np.arange(n_blocks * block_pix) + 0.5) / block_pix - 0.5, 0, n_blocks - 1)
    lower = np.clip(np.floor(coord).astype(np.int64), 0, max(n_blocks - 2, 0))
    upper = np.minimum(lower + 1, n_blocks - 1)
    return lower, upper, coord - lower


def _interpolate_blocks(local: np.ndarray, block_pix: int) -> np.ndarray:
    """Bilinear interpolation of the block map ``local`` to pixels (both axes, in turn).

    ``ndimage.zoom(order=1, mode="nearest", grid_mode=True)`` between block centres, by
    two gathers per axis: neither zoom nor a BLAS matrix product (threaded, it took
    milliseconds on a busy machine).
    """
    ly, uy, fy = _block_weights(local.shape[0], block_pix)
    lx, ux, fx = _block_weights(local.shape[1], block_pix)
    rows = local[ly] * (1.0 - fy)[:, None] + local[uy] * fy[:, None]
    return rows[:, lx] * (1.0 - fx) + rows[:, ux] * fx


def find_sources(
    image: np.ndarray,
    footprint: np.ndarray,
    kernel: np.ndarray,
    threshold_sigma: float,
    background_block_pix: int,
    background_window: int,
    mask_radius_pix: float,
    max_sources: int,
    confusion_fraction: float = 0.1,
) -> list[Candidate]:
    """PSF-matched detection: sources of the significance map above a threshold.

    Up to three passes: each re-estimates the background with the sources found so far
    masked, so that bright sources do not raise the background of their neighbours;
    the search stops early when a pass finds the sources of the one before (as many,
    each within a pixel: the masks, and so the background, would barely differ).

    Parameters
    ----------
    image
        Counts image ``[y, x]``.
    footprint
        Boolean map of the sky pixels the detector saw, or the fraction of each pixel
        it saw (a binned grid, :func:`bin_image`): the background of a pixel is
        proportional to it.
    kernel
        :func:`psf_kernel`.
    threshold_sigma
        Minimum significance of a source.
    background_block_pix, background_window
        Background mesh: block side in pixels, window side in blocks.
    mask_radius_pix
        Radius masked around each candidate for the background estimate.
    max_sources
        Keep at most this many, the most significant first.
    confusion_fraction
        Fraction of a brighter source's filtered signal counted as noise for its
        neighbours (:func:`_clean_peaks`).

    Returns
    -------
    list of Candidate
        Most significant first; empty when nothing passes.
    """
    seen_fraction = np.asarray(footprint, dtype=float)
    if image.sum() == 0 or not np.any(seen_fraction > 0):
        return []
    mf = matched_filter(image, seen_fraction, kernel)
    k_sum, k2_sum, filtered, auto = mf.k_sum, mf.k2_sum, mf.filtered, mf.autocorrelation
    # One count spread over the footprint: keeps the variance positive without background.
    floor = 1.0 / float(seen_fraction.sum())
    mask = np.zeros(image.shape, dtype=bool)
    valid = (seen_fraction > 0) & (k2_sum > 0)
    peaks: list[Candidate] = []
    previous: list[Candidate] = []  # nothing found before: the empty mask
    for _ in range(3):
        background = np.maximum(
            local_background(image, seen_fraction, mask, background_block_pix, background_window),
            floor,
        )
        excess = filtered - background * k_sum
        peaks = _clean_peaks(
            excess,
            k2_sum,
            background,
            valid,
            threshold_sigma,
            auto,
            max_sources,
            confusion_fraction,
        )
        if _same_sources(peaks, previous):
            break  # the same sources again: the background would barely change
        previous = peaks
        mask = _disc_mask(image.shape, peaks, mask_radius_pix)
    return sorted(peaks, key=lambda c: -c.significance)


def _subtract_source(
    residual: np.ndarray, counts: float, autocorrelation: np.ndarray, y: int, x: int
) -> None:
    """Remove a source's filtered image, ``counts · A(· − (y, x))``, from ``residual``."""
    hy, hx = autocorrelation.shape[0] // 2, autocorrelation.shape[1] // 2
    ny, nx = residual.shape
    y0, y1 = max(y - hy, 0), min(y + hy + 1, ny)
    x0, x1 = max(x - hx, 0), min(x + hx + 1, nx)
    residual[y0:y1, x0:x1] -= (
        counts * autocorrelation[hy + y0 - y : hy + y1 - y, hx + x0 - x : hx + x1 - x]
    )


def _clean_peaks(
    excess: np.ndarray,
    k2_sum: np.ndarray,
    background: np.ndarray,
    valid: np.ndarray,
    threshold: float,
    autocorrelation: np.ndarray,
    max_sources: int,
    confusion_fraction: float,
) -> list[Candidate]:
    """Sources by CLEAN: take the most significant pixel, subtract its source, repeat.

    A bright source's cross arms and 30′ halo raise the filtered image far from its
    centre, on a gradient where a fainter neighbour makes no local maximum; removing
    each accepted source's whole filtered image (its counts times the kernel's
    autocorrelation) before looking for the next one finds the neighbour and never
    mistakes the arms for sources. The subtraction is only as good as the pixel-rounded
    position and the PSF model: ``confusion_fraction`` of the subtracted signal is
    added to the noise, so that the residual wings of a bright source are not
    mistaken for faint neighbours.
    """
    variance = np.maximum(background * k2_sum, 1e-30)
    residual = np.array(excess, dtype=float)
    subtracted = np.zeros_like(residual)
    found: list[Candidate] = []
    for _ in range(max_sources):
        noise = np.sqrt(variance + (confusion_fraction * subtracted) ** 2)
        significance = np.where(valid, residual / noise, -np.inf)
        y, x = np.unravel_index(int(np.argmax(significance)), significance.shape)
        if significance[y, x] < threshold:
            break
        counts = float(residual[y, x] / k2_sum[y, x])
        dy, dx = _peak_offset(significance, int(y), int(x))
        found.append(
            Candidate(
                x=float(x + 1 + dx),
                y=float(y + 1 + dy),
                counts=counts,
                significance=float(significance[y, x]),
                background=float(background[y, x]),
            )
        )
        _subtract_source(residual, counts, autocorrelation, int(y), int(x))
        _subtract_source(subtracted, -counts, autocorrelation, int(y), int(x))
    return found


def _peak_offset(values: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """Sub-pixel offset ``(dy, dx)`` of the maximum of ``values`` at pixel ``(y, x)``.

    Along each axis, the vertex of the parabola through the pixel and its two
    neighbours, within ±0.5 pixel; 0 at the border or beside an invalid pixel.
    """
    offsets = []
    for axis, (i, n) in enumerate(((y, values.shape[0]), (x, values.shape[1]))):
        if i == 0 or i == n - 1:
            offsets.append(0.0)
            continue
        lower = values[i - 1, x] if axis == 0 else values[y, i - 1]
        upper = values[i + 1, x] if axis == 0 else values[y, i + 1]
        curvature = lower - 2.0 * values[y, x] + upper
        if not (np.isfinite(lower) and np.isfinite(upper)) or curvature >= 0:
            offsets.append(0.0)
            continue
        offsets.append(float(np.clip(0.5 * (lower - upper) / curvature, -0.5, 0.5)))
    return offsets[0], offsets[1]


def _same_sources(found: list[Candidate], before: list[Candidate]) -> bool:
    """Whether two passes found the same sources: as many, each within a pixel."""
    if len(found) != len(before):
        return False
    return all(
        abs(a.x - b.x) <= 1.0 and abs(a.y - b.y) <= 1.0 for a, b in zip(found, before, strict=True)
    )


def _disc_mask(shape: tuple[int, ...], peaks: list[Candidate], radius: float) -> np.ndarray:
    """Boolean map, True within ``radius`` pixels of any peak."""
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for p in peaks:
        mask |= (xx + 1 - p.x) ** 2 + (yy + 1 - p.y) ** 2 <= radius**2
    return mask
