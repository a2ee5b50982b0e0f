"""Quick-look brick: PNG pictures of the image, the light curve and the spectrum.

Small matplotlib (Agg) figures for the burst advocate and the dashboard. matplotlib
is imported inside the brick so that no other brick pays for it. PNGs are written
without the software-version text chunk so that two runs give the same bytes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import Field

from bricks.base import Brick, BrickConfig
from bricks.errors import BadInput
from bricks.products import (
    ARF,
    BKG_PHA,
    IMAGE,
    LIGHTCURVE,
    LIGHTCURVE_FIT,
    POSITION,
    QL_IMAGE,
    QL_LIGHTCURVE,
    QL_SPECTRUM,
    RMF,
    SOURCES,
    SRC_PHA,
)
from bricks.regions import is_detection

VERSION = "1.0.0"


class QuicklookConfig(BrickConfig):
    """Quick-look parameters.

    Parameters
    ----------
    dpi
        Resolution of the PNGs (figures are 6 x 4.5 inches).
    image_half_width_pix
        Half width of the sky cut-out about the source (or the pointing), sky pixels.
    spectrum_min_counts
        Source counts per plotted spectral bin (display grouping only).
    max_points
        Most points drawn per curve; more bins are merged for display only.
    """

    dpi: int = Field(80, ge=30, le=300)
    image_half_width_pix: int = Field(128, ge=16, le=256)
    spectrum_min_counts: int = Field(20, ge=1, le=10_000)
    max_points: int = Field(150, ge=10, le=5000)


def _figure(plt: Any) -> Any:
    return plt.figure(figsize=(6.0, 4.5))


def _png(fig: Any, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12)


def _image_hdu(image: fits.HDUList) -> fits.ImageHDU | fits.PrimaryHDU:
    for hdu in image:
        if hdu.is_image and hdu.data is not None and hdu.data.ndim == 2:
            return hdu
    raise BadInput("image product has no 2-D image HDU")


def image_png(
    image: fits.HDUList,
    position: Mapping[str, Any],
    sources: fits.HDUList | None,
    config: QuicklookConfig,
) -> bytes:
    """Sky image (asinh stretch, WCS axes) with the sources and the 90 % error circle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from astropy.wcs import WCS, FITSFixedWarning
    from matplotlib.patches import Circle

    hdu = _image_hdu(image)
    with warnings.catch_warnings():
        # the image's MJDREF/DATE-OBS make astropy "fix" date keywords and say so
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdu.header).celestial
    if wcs.naxis != 2:
        raise BadInput("image product has no celestial WCS (CTYPE1/2 RA---TAN, DEC--TAN)")
    fig = _figure(plt)
    ax = fig.add_subplot(projection=wcs)
    data = np.asarray(hdu.data, dtype=np.float64)
    norm = ImageNormalize(data, interval=PercentileInterval(99.8), stretch=AsinhStretch(0.02))
    ax.imshow(data, origin="lower", cmap="magma", norm=norm, interpolation="nearest")
    ax.set_xlabel("RA (ICRS)")
    ax.set_ylabel("Dec (ICRS)")
    detected = is_detection(position)
    # 0-based pixel coordinates for matplotlib; the products' x/y are FITS (1-based).
    if detected:
        cx, cy = float(position["x"]) - 1.0, float(position["y"]) - 1.0
    else:
        cx, cy = (data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0
    half = config.image_half_width_pix
    ax.set_xlim(cx - half, cx + half)
    ax.set_ylim(cy - half, cy + half)
    if sources is not None and "SRCLIST" in sources and len(sources["SRCLIST"].data):
        table = sources["SRCLIST"].data
        ax.scatter(
            table["X"] - 1.0,
            table["Y"] - 1.0,
            s=60,
            facecolors="none",
            edgecolors="cyan",
            linewidths=0.8,
            label=f"{len(table)} source(s)",
        )
    if detected:
        scale_arcsec = abs(wcs.wcs.cdelt[0]) * 3600.0 if wcs.wcs.cdelt[0] else 13.45
        radius_pix = float(position["err90_arcsec"]) / scale_arcsec
        ax.add_patch(
            Circle(
                (cx, cy),
                radius_pix,
                fill=False,
                color="lime",
                linewidth=1.2,
                label="90 % error circle",
            )
        )
        ax.set_title(
            f"RA {float(position['ra']):.4f}  Dec {float(position['dec']):+.4f}  "
            f'r90 {float(position["err90_arcsec"]):.1f}"',
            fontsize=10,
        )
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.set_title(f"no detection ({position.get('status', 'unknown')})", fontsize=10)
    return _png(fig, config.dpi)


def _display_points(
    rate: fits.FITS_rec, t0: float, max_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Light curve bins merged in runs so that at most ``max_points`` are drawn.

    Returns time since ``t0`` (exposure-weighted), rate, error and half width, s and
    count/s; merging only thins the picture, the product keeps every bin.
    """
    n = len(rate)
    if n == 0:
        empty = np.empty(0)
        return empty, empty, empty, empty
    group = np.arange(n) // max(1, -(-n // max_points))
    exposure = np.asarray(rate["EXPOSURE"], dtype=np.float64)
    weight = np.bincount(group, exposure)
    weight = np.where(weight > 0, weight, 1.0)
    start = np.asarray(rate["TIME"] - rate["TIMEDEL"] / 2.0 - t0, dtype=np.float64)
    stop = np.asarray(rate["TIME"] + rate["TIMEDEL"] / 2.0 - t0, dtype=np.float64)
    lo = np.minimum.reduceat(start, np.flatnonzero(np.diff(group, prepend=-1)))
    hi = np.maximum.reduceat(stop, np.flatnonzero(np.diff(group, prepend=-1)))
    centre = np.bincount(group, (start + stop) / 2.0 * exposure) / weight
    value = np.bincount(group, rate["RATE"] * exposure) / weight
    error = np.sqrt(np.bincount(group, (rate["ERROR"] * exposure) ** 2)) / weight
    return centre, value, error, (hi - lo) / 2.0


def lightcurve_png(
    lightcurve: fits.HDUList, fit: Mapping[str, Any], config: QuicklookConfig
) -> bytes:
    """Net rate against time since t0, log-log, with the decay fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _figure(plt)
    ax = fig.add_subplot()
    t0 = float(fit.get("t0") or 0.0)
    since, rate, error, half_width = _display_points(lightcurve["RATE"].data, t0, config.max_points)
    shown = (since > 0) & (rate > 0)
    if not np.any(shown):
        _message(ax, f"no light curve ({lightcurve['RATE'].header.get('LC_STAT', 'empty')})")
        return _png(fig, config.dpi)
    since, rate, error, half_width = since[shown], rate[shown], error[shown], half_width[shown]
    ax.errorbar(
        since,
        rate,
        xerr=half_width,
        yerr=np.minimum(error, 0.999 * rate),
        fmt="o",
        ms=3,
        color="black",
        elinewidth=0.8,
        label="MXT 0.2-10 keV",
    )
    if fit.get("alpha") is not None:
        grid = np.geomspace(since.min() * 0.8, since.max() * 1.2, 100)
        err = fit.get("alpha_err")
        label = f"alpha = {fit['alpha']:.2f}" + (f" +/- {err:.2f}" if err else "")
        ax.plot(grid, fit["norm"] * grid ** -fit["alpha"], color="crimson", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()  # dozens of log minor ticks cost more than the data to draw
    ax.set_xlabel(f"time since T0 = {t0:.1f} (s)")
    ax.set_ylabel("rate (count/s, PSF and vignetting corrected)")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig, config.dpi)


def _group_channels(counts: np.ndarray, min_counts: float) -> np.ndarray:
    """Group index of each channel: consecutive channels until ``min_counts`` accrue."""
    before = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    # A bright channel can jump several multiples at once: renumber without gaps.
    return np.unique(np.floor(before / min_counts), return_inverse=True)[1]


def spectrum_png(
    src_pha: fits.HDUList,
    bkg_pha: fits.HDUList,
    arf: fits.HDUList,
    rmf: fits.HDUList,
    config: QuicklookConfig,
) -> bytes:
    """Source and scaled background spectra (count/s/keV) with a folded power-law fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bricks.spectral_fit import fit_power_law, response_from_files

    fig = _figure(plt)
    ax = fig.add_subplot()
    src, bkg = src_pha["SPECTRUM"], bkg_pha["SPECTRUM"]
    exposure = float(src.header.get("EXPOSURE", 0.0))
    good = src.data["QUALITY"] == 0
    counts = np.asarray(src.data["COUNTS"], dtype=np.float64)
    if exposure <= 0 or counts[good].sum() == 0:
        _message(ax, f"no spectrum ({src.header.get('SPECSTAT', 'empty')})")
        return _png(fig, config.dpi)
    ratio = float(src.header["BACKSCAL"]) / float(bkg.header["BACKSCAL"])
    response = response_from_files(arf, rmf)
    bkg_counts = np.asarray(bkg.data["COUNTS"], dtype=np.float64)
    channels = np.flatnonzero(good)
    per_group = max(config.spectrum_min_counts, counts[channels].sum() / config.max_points)
    group = _group_channels(counts[channels], per_group)
    width = np.bincount(group, response.e_max[channels] - response.e_min[channels])
    energy = np.bincount(group, 0.5 * (response.e_max + response.e_min)[channels]) / np.bincount(
        group
    )
    per_kev = 1.0 / (exposure * width)
    src_grouped = np.bincount(group, counts[channels])
    bkg_grouped = ratio * np.bincount(group, bkg_counts[channels])
    ax.errorbar(
        energy,
        src_grouped * per_kev,
        yerr=np.sqrt(src_grouped) * per_kev,
        fmt="o",
        ms=3,
        color="black",
        elinewidth=0.8,
        label="source region",
    )
    background = np.where(bkg_grouped > 0, bkg_grouped * per_kev, np.nan)  # log axis
    ax.step(energy, background, where="mid", color="grey", label="background (scaled)")
    try:
        fit = fit_power_law(response, counts, bkg_counts, ratio, exposure, good)
    except BadInput:
        fit = None
    if fit is not None:
        model = np.bincount(group, fit.model_counts[channels]) * per_kev
        label = f"abs. power law, Gamma = {fit.gamma:.2f}"
        if fit.gamma_err:
            label += f" +/- {fit.gamma_err:.2f}"
        label += f", NH = {fit.nh:.2f}e22"
        ax.plot(energy, model, color="crimson", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("count/s/keV")
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig, config.dpi)


def _run(
    inputs: Mapping[str, Any], calibration: Mapping[str, Any], config: QuicklookConfig
) -> dict[str, Any]:
    return {
        "ql_image": image_png(inputs["image"], inputs["position"], inputs.get("sources"), config),
        "ql_lightcurve": lightcurve_png(inputs["lightcurve"], inputs["lightcurve_fit"], config),
        "ql_spectrum": spectrum_png(
            inputs["src_pha"], inputs["bkg_pha"], inputs["arf"], inputs["rmf"], config
        ),
    }


BRICK = Brick(
    name="quicklook",
    version=VERSION,
    inputs=(
        IMAGE,
        SOURCES.as_optional(),
        POSITION,
        LIGHTCURVE,
        LIGHTCURVE_FIT,
        SRC_PHA,
        BKG_PHA,
        ARF,
        RMF,
    ),
    outputs=(
        QL_IMAGE,
        QL_LIGHTCURVE,
        QL_SPECTRUM,
    ),
    caldb=(),
    config=QuicklookConfig,
    run=_run,
)
