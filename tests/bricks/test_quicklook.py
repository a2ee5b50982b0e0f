"""Quick-look brick: PNG pictures built from real light curve and spectrum products."""

from __future__ import annotations

import io
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from astropy.io import fits

from bricks import lightcurve, spectrum
from bricks.calibration import model_calibrations
from bricks.errors import BadInput
from bricks.quicklook import BRICK
from bricks.wcs import sky_wcs
from tests.bricks.synthetic_l2 import DEC_PNT, RA_PNT, Scene, make_l2, position_of

CAL = model_calibrations()
LIME = np.array([0.0, 1.0, 0.0])  # the error circle
CRIMSON = np.array([220, 20, 60]) / 255.0  # the fitted models


def _image(l2):
    events = l2["EVENTS"].data
    counts, _, _ = np.histogram2d(
        events["Y"], events["X"], bins=512, range=[[0.5, 512.5], [0.5, 512.5]]
    )
    return fits.HDUList(
        [fits.PrimaryHDU(counts.astype(np.int32), sky_wcs(RA_PNT, DEC_PNT).to_header())]
    )


def _sources(truth):
    table = fits.BinTableHDU.from_columns(
        [fits.Column("X", "D", array=[truth["x"]]), fits.Column("Y", "D", array=[truth["y"]])],
        name="SRCLIST",
    )
    return fits.HDUList([fits.PrimaryHDU(), table])


def _inputs(l2, position):
    products = {"l2_events": l2, "position": position, "image": _image(l2)}
    products.update(lightcurve.BRICK(products, CAL, {}))
    products.update(spectrum.BRICK(products, CAL, {}))
    return products


@pytest.fixture(scope="module")
def detected():
    l2, truth = make_l2(Scene(source_counts=5000, seed=31))
    return {**_inputs(l2, position_of(truth)), "sources": _sources(truth)}


@pytest.fixture(scope="module")
def undetected():
    l2, _ = make_l2(Scene(source_counts=5000, seed=31))
    return _inputs(l2, {"status": "no_detection"})


def _pixels(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def _has_colour(png: bytes, colour: np.ndarray) -> bool:
    # Anti-aliased lines at low dpi: accept pixels near the colour.
    return bool(np.any(np.all(np.abs(_pixels(png) - colour) < 0.2, axis=-1)))


@pytest.fixture(scope="module")
def pictures(detected):
    return BRICK(detected, {}, {"dpi": 50})


def test_three_pngs_of_the_configured_size(pictures):
    assert sorted(pictures) == ["ql_image", "ql_lightcurve", "ql_spectrum"]
    for png in pictures.values():
        assert png.startswith(b"\x89PNG")
        assert _pixels(png).shape == (225, 300, 3)  # 6 x 4.5 inches at 50 dpi


def test_pictures_are_deterministic(detected, pictures):
    assert BRICK(detected, {}, {"dpi": 50}) == pictures


def test_error_circle_and_fits_are_drawn_only_when_they_exist(pictures, undetected):
    missing = BRICK(undetected, {}, {"dpi": 50})
    assert _has_colour(pictures["ql_image"], LIME)
    assert not _has_colour(missing["ql_image"], LIME)
    assert _has_colour(pictures["ql_lightcurve"], CRIMSON)
    assert not _has_colour(missing["ql_lightcurve"], CRIMSON)
    assert _has_colour(pictures["ql_spectrum"], CRIMSON)
    assert not _has_colour(missing["ql_spectrum"], CRIMSON)


def test_an_image_product_without_an_image_is_named(detected):
    products = {**detected, "image": fits.HDUList([fits.PrimaryHDU()])}
    with pytest.raises(BadInput, match="2-D image"):
        BRICK(products, {}, {})
    no_wcs = fits.HDUList([fits.PrimaryHDU(np.zeros((8, 8)))])
    with pytest.raises(BadInput, match="no celestial WCS"):
        BRICK({**detected, "image": no_wcs}, {}, {})


def test_other_bricks_do_not_import_matplotlib():
    code = (
        "import sys, bricks.lightcurve, bricks.spectrum, bricks.pipeline, bricks.quicklook;"
        "print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
