"""The FITS layout walker against hostile headers: a clear 422 in milliseconds, never a loop.

Before the walker checked its cards, a header with ``NAXIS1 = -2880`` sent the offset
back to the header it had just read: the walk never ended and grew by ~40 MB/s. Every
test here has a hang guard far above the milliseconds the answer takes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits

from bricks.base import Product
from bricks.errors import Unprocessable
from bricks.pipeline import (
    MAX_HDUS,
    MAX_HEADER_CARDS,
    _fits_layout,
    check_fits_layout,
    content_digest,
    deserialise_product,
)
from bricks.registry import get_brick
from gateway.runtime import create_app
from gateway.runtime.limits import RuntimeLimits
from storage.brick_adapter import BrickRequest, run_brick
from storage.local import LocalObjectStore
from storage.objects import get_store
from storage.settings import get_settings

pytestmark = pytest.mark.timeout(30)  # a hang guard: each answer takes milliseconds

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
L0 = Product("l0", "l0.fits", "fits")
BLOCK = 2880


def _card(keyword: str, value: str) -> bytes:
    """One fixed-format 80-byte card (the value right-justified in columns 11-30)."""
    return f"{keyword:<8}= {value:>20}".ljust(80).encode("ascii")


def _image_and_table() -> bytes:
    """A valid two-HDU file: a 4x4 int16 image and a binary table with a heap."""
    image = fits.PrimaryHDU(np.arange(16, dtype=np.int16).reshape(4, 4))
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column("A", "E", array=np.arange(5.0)),
            fits.Column("V", "PJ()", array=[np.arange(3)] * 5),
        ],
        name="T",
    )
    buffer = io.BytesIO()
    fits.HDUList([image, table]).writeto(buffer)
    return buffer.getvalue()


def _with_card(data: bytes, hdu: int, keyword: str, value: str) -> bytes:
    """``data`` with card ``keyword`` of HDU ``hdu`` (0-based) set to ``value``."""
    out = bytearray(data)
    seen = 0
    for at in range(0, len(out), 80):
        card = bytes(out[at : at + 80])
        if seen == hdu and card[:8].rstrip() == keyword.encode():
            out[at : at + 80] = _card(keyword, value)
            return bytes(out)
        if card.rstrip() == b"END":
            seen += 1
    raise AssertionError(f"no card {keyword} in HDU {hdu}")


@pytest.fixture(scope="module")
def valid() -> bytes:
    data = _image_and_table()
    assert len(deserialise_product(L0, data)) == 2  # the unmodified file reads
    return data


@pytest.mark.parametrize(
    ("hdu", "keyword", "value", "message"),
    [
        # -2880 is the value that walked the old loop backwards for ever
        (0, "NAXIS1", "-2880", "HDU 0: card NAXIS1 = -2880 is out of range"),
        (0, "NAXIS2", "-1", "HDU 0: card NAXIS2 = -1 is out of range"),
        (1, "PCOUNT", "-5760", "HDU 1: card PCOUNT = -5760 is out of range"),
        (1, "GCOUNT", "0", "HDU 1: card GCOUNT = 0 is out of range"),
        (0, "BITPIX", "7", "HDU 0: card BITPIX = 7 is not one of"),
        (0, "BITPIX", "-9223372036854775808", "HDU 0: card BITPIX = -9223372036854775808"),
        (0, "NAXIS", "1000", "HDU 0: card NAXIS = 1000 is out of range [0, 999]"),
        (0, "NAXIS", "999999999999", "HDU 0: card NAXIS = 999999999999 is out of range"),
        (0, "NAXIS", "3", "HDU 0: card NAXIS3 is missing"),
        (0, "NAXIS1", "1.5", "HDU 0: card NAXIS1 = '1.5' is not an integer"),
        (0, "NAXIS1", "'4'", "HDU 0: card NAXIS1 = \"'4'\" is not an integer"),
        (1, "NAXIS2", "99999999999999999999", "HDU 1: card NAXIS2 = 99999999999999999999"),
        # sizes that fit the cards but not the file
        (0, "NAXIS1", "1000000000000000000", "HDU 0 needs 8000000000000000640 data bytes"),
        (1, "PCOUNT", "3000000", "truncated FITS file: HDU 1 needs"),
    ],
)
def test_hostile_cards_are_named(valid, hdu, keyword, value, message):
    hostile = _with_card(valid, hdu, keyword, value)
    with pytest.raises(Unprocessable, match="product l0") as refused:
        deserialise_product(L0, hostile)
    assert message in refused.value.reason
    with pytest.raises(Unprocessable):
        content_digest(L0, hostile)


def test_a_repeated_size_card_is_refused(valid):
    # astropy reads the first NAXIS1; a walker reading the second would disagree with it
    hostile = bytearray(valid)
    hostile[80 * 5 : 80 * 6] = _card("NAXIS1", "-1")  # in place of EXTEND, before END
    with pytest.raises(Unprocessable, match="HDU 0: card NAXIS1 appears twice"):
        deserialise_product(L0, bytes(hostile))


def test_the_walk_agrees_with_astropy_on_every_hdu(valid):
    with fits.open(io.BytesIO(valid)) as hdul:
        astropy = [hdul.fileinfo(i) for i in range(len(hdul))]
    walked = _fits_layout("l0", valid)
    assert [(start, end) for _, start, end in walked] == [
        (info["datLoc"], info["datLoc"] + info["datSpan"]) for info in astropy
    ]


def _spinning_table() -> bytes:
    """A binary-table HDU (header and one data block) with ``PCOUNT = -5760``: astropy's
    own ``fits.open`` never returns on a file holding it."""
    table = [
        ("XTENSION", "'BINTABLE'"),
        ("BITPIX", "8"),
        ("NAXIS", "2"),
        ("NAXIS1", "4"),
        ("NAXIS2", "1"),
        ("PCOUNT", "-5760"),
        ("GCOUNT", "1"),
        ("TFIELDS", "1"),
        ("TFORM1", "'E'"),
    ]
    extension = b"".join(_card(k, v) for k, v in table) + b"END"
    return extension.ljust(BLOCK) + bytes(BLOCK)


def _astropy_spinner() -> bytes:
    """A file on which astropy's own ``fits.open`` never returns."""
    primary = _card("SIMPLE", "T") + _card("BITPIX", "8") + _card("NAXIS", "0") + b"END"
    return primary.ljust(BLOCK) + _spinning_table()


def test_a_lenient_end_card_ends_the_header_as_astropy_ends_it():
    # astropy takes "END" + blanks + a non-keyword character as END (with a warning): the
    # walker must too, or astropy would go on to the next HDU unchecked. That HDU's
    # PCOUNT = -5760 makes astropy's own fits.open spin for ever.
    primary = _card("SIMPLE", "T") + _card("BITPIX", "8") + _card("NAXIS", "0")
    primary += b"END     !".ljust(80)
    data = primary.ljust(BLOCK) + _spinning_table()
    with pytest.raises(Unprocessable, match="HDU 1: card PCOUNT = -5760 is out of range"):
        check_fits_layout("caldb file", data)


def test_the_readers_that_open_outside_bytes_with_astropy_check_the_layout_first():
    """The L0 reader (the orchestrator reads every raw arrival's header with it) and the
    CALDB ingest would hang in astropy on this file; both refuse it, naming the card."""
    from bricks.l0 import read_l0_bytes
    from storage.caldb.index import describe_extensions

    data = _astropy_spinner()
    for read in (read_l0_bytes, describe_extensions):
        with pytest.raises(Unprocessable, match="PCOUNT = -5760 is out of range"):
            read(data)


@pytest.mark.parametrize("cut", [100, BLOCK, BLOCK + 10, -10, -BLOCK])
def test_truncated_files_are_named(valid, cut):
    data = valid[:cut] if cut > 0 else valid[:cut]
    with pytest.raises(Unprocessable, match="truncated FITS file"):
        deserialise_product(L0, data)


def test_a_header_without_end_is_bounded():
    cards = _card("SIMPLE", "T") + _card("BITPIX", "8") + _card("NAXIS", "0")
    endless = cards + b" " * (MAX_HEADER_CARDS * 80 + 2 * BLOCK - len(cards))
    with pytest.raises(Unprocessable, match=f"HDU 0: no END card in the first {MAX_HEADER_CARDS}"):
        deserialise_product(L0, endless)
    with pytest.raises(Unprocessable, match="truncated FITS file \\(in a header\\)"):
        deserialise_product(L0, endless[: 10 * BLOCK])


def test_the_number_of_hdus_is_bounded():
    header = _card("SIMPLE", "T") + _card("BITPIX", "8") + _card("NAXIS", "0") + b"END"
    empty_hdu = header.ljust(BLOCK)
    with pytest.raises(Unprocessable, match=f"more than {MAX_HDUS} HDUs"):
        content_digest(L0, empty_hdu * (MAX_HDUS + 1))
    assert content_digest(L0, empty_hdu * MAX_HDUS)  # the limit itself is accepted


def test_random_groups_size_skips_the_naxis1_marker():
    # 200 groups of 1 parameter + a 2x2 float32 array: 4000 bytes, two blocks; counting
    # the NAXIS1 = 0 marker as an axis would make it 800 bytes and one block
    cards = [
        ("SIMPLE", "T"),
        ("BITPIX", "-32"),
        ("NAXIS", "3"),
        ("NAXIS1", "0"),
        ("NAXIS2", "2"),
        ("NAXIS3", "2"),
        ("GROUPS", "T"),
        ("PCOUNT", "1"),
        ("GCOUNT", "200"),
    ]
    header = b"".join(_card(k, v) for k, v in cards) + b"END"
    data = header.ljust(BLOCK) + bytes(2 * BLOCK)
    assert [(start, end) for _, start, end in _fits_layout("groups", data)] == [(BLOCK, 3 * BLOCK)]
    with pytest.raises(Unprocessable, match="HDU 0 needs 5760 data bytes, 2880 present"):
        _fits_layout("groups", data[: 2 * BLOCK])


# --- the brick adapter: a hostile L0 given to the ingest brick ------------------------


@pytest.fixture()
def hostile_l0(valid: bytes) -> bytes:
    return _with_card(valid, 0, "NAXIS1", "-2880")


@pytest.fixture()
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalObjectStore]:
    """The local object store a function process of this data directory uses."""
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MXT_OBJECT_STORE", "local")
    get_settings.cache_clear()
    get_store.cache_clear()
    store = LocalObjectStore(tmp_path / "data" / "objects")
    store.ensure_buckets()
    yield store
    get_settings.cache_clear()
    get_store.cache_clear()


def _request() -> BrickRequest:
    return BrickRequest(run_id="r1", task_id="r1:ingest", inputs={"l0": "raw/hostile.fits"})


def test_ingest_brick_refuses_a_hostile_l0_as_unprocessable(local_store, hostile_l0):
    local_store.put("raw", "hostile.fits", hostile_l0)
    with pytest.raises(Unprocessable) as refused:
        run_brick(get_brick("ingest"), _request(), local_store)
    assert refused.value.http_status == 422
    assert "input l0 (raw/hostile.fits) unreadable" in refused.value.reason
    assert "HDU 0: card NAXIS1 = -2880 is out of range" in refused.value.reason
    assert local_store.list("products").items == []  # nothing written


async def test_ingest_function_answers_422_for_a_hostile_l0(local_store, hostile_l0):
    local_store.put("raw", "hostile.fits", hostile_l0)
    app = create_app(FUNCTIONS / "brick-ingest", "brick-ingest", RuntimeLimits())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
        response = await client.post("/", content=_request().model_dump_json())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["kind"] == "unprocessable"
    assert "HDU 0: card NAXIS1 = -2880" in body["reason"]
