"""brick-quicklook: the quicklook brick on object keys (claim-check)."""

from __future__ import annotations

import logging
import time

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from bricks.quicklook import QuicklookConfig, image_png, lightcurve_png, spectrum_png
from bricks.registry import get_brick
from storage.brick_adapter import BrickRequest, BrickResponse, run_brick_function, warm_up

WARM_PIXELS = 32  # side of the synthetic sky image drawn at start (sky pixels)
MXT_PIXEL_ARCSEC = 13.45  # sky pixel size (arcsec): any plausible TAN scale does


def _warm_image() -> fits.HDUList:
    """A tiny sky image with an RA---TAN/DEC--TAN WCS (flat counts)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, 20.0]
    wcs.wcs.crpix = [WARM_PIXELS / 2.0, WARM_PIXELS / 2.0]
    wcs.wcs.cdelt = [-MXT_PIXEL_ARCSEC / 3600.0, MXT_PIXEL_ARCSEC / 3600.0]
    data = np.ones((WARM_PIXELS, WARM_PIXELS), dtype=np.float32)
    return fits.HDUList([fits.PrimaryHDU(data, header=wcs.to_header())])


def _warm_lightcurve() -> fits.HDUList:
    """Four light-curve bins of 10 s, decaying, in the RATE table layout."""
    time_s = np.array([15.0, 25.0, 35.0, 45.0])
    columns = [
        fits.Column(name="TIME", format="D", array=time_s),
        fits.Column(name="TIMEDEL", format="D", array=np.full(4, 10.0)),
        fits.Column(name="EXPOSURE", format="D", array=np.full(4, 10.0)),
        fits.Column(name="RATE", format="D", array=100.0 / time_s),
        fits.Column(name="ERROR", format="D", array=np.full(4, 0.5)),
    ]
    return fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="RATE")])


def _warm_spectrum() -> fits.HDUList:
    """An empty-exposure spectrum: the brick draws its 'no spectrum' figure."""
    columns = [
        fits.Column(name="COUNTS", format="J", array=np.zeros(4, dtype=np.int32)),
        fits.Column(name="QUALITY", format="I", array=np.zeros(4, dtype=np.int16)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    table.header["EXPOSURE"] = 0.0
    return fits.HDUList([fits.PrimaryHDU(), table])


def warm_figures() -> float:
    """Draw and discard one figure of each kind; the seconds it took.

    The first figure of a process pays matplotlib's import, the font cache, the
    WCSAxes machinery and the PNG writer (4-8 s on a busy laptop, 0.1-0.7 s after):
    paid here at process start, not by the first run's quick-look. Only the brick's
    public functions are called, on synthetic inputs that no run ever sees.
    """
    clock = time.perf_counter()
    config = QuicklookConfig(dpi=30)
    detected = {"status": "detected", "ra": 10.0, "dec": 20.0, "x": 16.0, "y": 16.0}
    image_png(_warm_image(), {**detected, "err90_arcsec": 30.0}, None, config)
    fit = {"t0": 0.0, "alpha": 1.0, "alpha_err": 0.1, "norm": 100.0}
    lightcurve_png(_warm_lightcurve(), fit, config)
    spectrum = _warm_spectrum()
    spectrum_png(spectrum, spectrum, spectrum, spectrum, config)
    return time.perf_counter() - clock


# imported when the process starts, not on the first call: a ToO notice waits for no import
BRICK = get_brick("quicklook")
warm_up()
try:
    logging.getLogger(__name__).info("quick-look figures warmed in %.2f s", warm_figures())
except Exception:  # noqa: BLE001 - an optimisation only: the first real call reports any fault
    logging.getLogger(__name__).exception("quick-look warm-up failed; the first call pays it")


def handle(request: BrickRequest, context) -> BrickResponse:  # noqa: ANN001
    """Read the inputs, run the brick, write its products; answer their keys and provenance."""
    return run_brick_function(BRICK, request, context.log)
