"""Dropping products: a released FITS product is freed at once and without a copy.

astropy copies every column of a dying ``FITS_rec`` that a ``Column`` still tracks;
:func:`bricks.pipeline.release_tables` avoids that copy (the pipeline's peak memory at
10⁷ events) and must not keep the rows alive instead.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
from astropy.io import fits

from bricks.pipeline import release_tables
from bricks.tables import ColumnSpec, table_hdu

N_ROWS = 1_000_000
ROW_BYTES = 12  # TIME (8) + X (4)


def _product() -> fits.HDUList:
    time = np.arange(N_ROWS, dtype=np.float64)
    columns = [ColumnSpec("TIME", "1D", "s", time), ColumnSpec("X", "1E", "pixel", time)]
    hdul = fits.HDUList([fits.PrimaryHDU(), table_hdu(columns, N_ROWS, "EVENTS")])
    float(hdul["EVENTS"].data["TIME"].sum())  # a column read, as a brick does
    return hdul


def _drop(release: bool) -> tuple[int, int]:
    """(bytes freed, extra bytes allocated while dropping) for one product."""
    tracemalloc.start()
    try:
        product = _product()
        if release:
            release_tables(product)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        del product
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held - after, peak - held


def test_a_released_product_is_freed_at_once_without_a_copy():
    freed, extra = _drop(release=True)
    assert freed >= N_ROWS * ROW_BYTES
    assert extra < N_ROWS * ROW_BYTES // 10


def test_an_unreleased_product_is_also_freed():
    freed, _ = _drop(release=False)
    assert freed >= N_ROWS * ROW_BYTES


def test_release_leaves_non_fits_values_alone():
    for value in ({"status": "detected"}, b"png", "text"):
        release_tables(value)
    product = _product()
    release_tables(product)
    assert product["EVENTS"].data["TIME"][-1] == N_ROWS - 1  # the table itself is intact
