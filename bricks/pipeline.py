"""The in-process pipeline: every registered brick on one L0 observation, in order.

Also the one place that turns product values into bytes and back
(:func:`serialise_product`, :func:`deserialise_product`), shared with the function
adapters so that the function chain and ``mxt pipeline run`` write identical content.
FITS files are written exactly as the bricks built them (no DATE or CHECKSUM added), so
the same inputs give the same bytes; :func:`content_digest` additionally ignores the
DATE, CHECKSUM and DATASUM cards, for comparing files written by different writers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits
from pydantic import ValidationError

from bricks.base import Brick, BrickConfig, Product
from bricks.errors import BadInput, NotFound, NoWork, Unprocessable

#: ``progress(event)`` is called when a brick starts, finishes or is skipped.
ProgressCallback = Callable[["ProgressEvent"], None]
#: ``on_product(product, value, brick)`` is called as soon as a product exists.
ProductCallback = Callable[[Product, Any, Brick], None]

KINDS = ("fits", "png", "text", "json")
FITS_BLOCK = 2880
CARD = 80
VOLATILE = frozenset({"DATE", "CHECKSUM", "DATASUM"})


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a pipeline run.

    Attributes
    ----------
    brick
        Brick name.
    stage
        ``"start"``, ``"done"`` or ``"skipped"``.
    index, total
        Position of the brick (1-based) and number of bricks.
    reason
        Why a brick was skipped (empty otherwise).
    seconds
        Wall time of the brick, s (``"done"`` only).
    """

    brick: str
    stage: str
    index: int
    total: int
    reason: str = ""
    seconds: float = 0.0


# --- serialisation -----------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def serialise_product(product: Product, value: Any) -> bytes:
    """The bytes of a product value, by ``product.kind``.

    Parameters
    ----------
    product
        The product declaration (its ``kind`` decides the format).
    value
        ``HDUList`` (fits), ``bytes`` (png), ``str`` (text) or a JSON-able ``dict`` (json).

    Raises
    ------
    Unprocessable
        The value does not fit the kind (naming the product and the problem).
    """
    name = product.name
    if product.kind == "fits":
        buffer = io.BytesIO()
        write_product(product, value, buffer)
        return buffer.getvalue()
    if product.kind == "png":
        if not isinstance(value, bytes | bytearray) or not value.startswith(b"\x89PNG"):
            raise Unprocessable(f"product {name} should be PNG bytes")
        return bytes(value)
    if product.kind == "text":
        if not isinstance(value, str):
            raise Unprocessable(f"product {name} should be text, not {type(value).__name__}")
        return value.encode("utf-8")
    if product.kind == "json":
        try:
            text = json.dumps(
                value, sort_keys=True, indent=2, allow_nan=False, default=_json_default
            )
        except (TypeError, ValueError) as exc:
            raise Unprocessable(f"product {name} is not valid JSON: {exc}") from exc
        return (text + "\n").encode("utf-8")
    raise Unprocessable(f"product {name} has unknown kind {product.kind!r}; valid: {KINDS}")


def write_product(product: Product, value: Any, stream: BinaryIO) -> None:
    """Write a product to a binary stream: the bytes of :func:`serialise_product`.

    FITS products are streamed (no second copy in memory: an L1 event list of 10^7
    events is ~1 GB); the other kinds are small and written from their bytes.
    """
    if product.kind != "fits":
        stream.write(serialise_product(product, value))
        return
    if not isinstance(value, fits.HDUList):
        raise Unprocessable(
            f"product {product.name} should be an HDUList, not {type(value).__name__}"
        )
    try:
        value.writeto(stream, output_verify="exception")
    except (fits.VerifyError, ValueError, TypeError) as exc:
        raise Unprocessable(f"product {product.name} is not valid FITS: {exc}") from exc


def deserialise_product(product: Product, data: bytes) -> Any:
    """The product value of ``data`` (inverse of :func:`serialise_product`).

    Raises
    ------
    Unprocessable
        ``data`` is not a readable product of that kind (naming the product).
    """
    name = product.name
    if product.kind == "fits":
        _fits_layout(name, bytes(data))
        try:
            with warnings.catch_warnings():
                # astropy warns and returns what it could read of a truncated file
                warnings.simplefilter("error", fits.verify.VerifyWarning)
                hdul = fits.HDUList.fromstring(bytes(data))
                hdul.verify("exception")
                for hdu in hdul:
                    _ = hdu.data  # a truncated data unit fails here, not later
        except (
            OSError,
            ValueError,
            TypeError,
            IndexError,
            fits.VerifyError,
            fits.verify.VerifyWarning,
        ) as exc:
            raise Unprocessable(f"product {name} is not a readable FITS file: {exc}") from exc
        if len(hdul) == 0:
            raise Unprocessable(f"product {name} is an empty FITS file")
        return hdul
    if product.kind == "png":
        if not bytes(data).startswith(b"\x89PNG"):
            raise Unprocessable(f"product {name} is not a PNG file")
        return bytes(data)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unprocessable(f"product {name} is not UTF-8 text: {exc}") from exc
    if product.kind == "text":
        return text
    if product.kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise Unprocessable(f"product {name} is not valid JSON: {exc}") from exc
    raise Unprocessable(f"product {name} has unknown kind {product.kind!r}; valid: {KINDS}")


#: BITPIX values of the FITS standard (bits per data value; negative: IEEE floats).
BITPIX_VALUES = frozenset({8, 16, 32, 64, -32, -64})
#: Most HDUs a product may hold (MXT products have fewer than ten).
MAX_HDUS = 1000
#: Most header cards one HDU may have before its END card (2,778 blocks, 8 MB).
MAX_HEADER_CARDS = 100_000
_INT64 = 2**63
_INTEGER = re.compile(rb"[+-]?[0-9]{1,20}")
# The END card as astropy finds it (astropy.io.fits.header.HEADER_END_RE): "END" and
# blanks, or leniently "END", up to 76 blanks and a character no keyword has. The walker
# must end a header where astropy does, or astropy would read HDUs it never checked.
_END = re.compile(rb"END(?: {77}| {0,76}[^A-Z0-9_-])")


def _is_end(card: bytes) -> bool:
    """Whether an 80-byte card is the END card."""
    return _END.match(card) is not None


def _end_card(data: bytes, block: int) -> bool:
    """Whether the header block at offset ``block`` holds the END card."""
    at = data.find(b"END", block, block + FITS_BLOCK)
    while at >= 0:
        if (at - block) % CARD == 0 and _END.match(data, at, at + CARD):
            return True
        at = data.find(b"END", at + 1, block + FITS_BLOCK)
    return False


def _structural_cards(name: str, hdu: int, cards: list[bytes]) -> dict[str, bytes]:
    """The value fields of the cards that set a data unit's size (BITPIX, NAXIS, ...).

    Raises
    ------
    Unprocessable
        One of those keywords appears twice in the header.
    """
    found: dict[str, bytes] = {}
    for card in cards:
        if _is_end(card):
            break  # the blank cards after END are padding
        keyword = card[:8].rstrip()
        if card[8:10] != b"= " or not (
            keyword in (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT", b"GROUPS")
            or (keyword.startswith(b"NAXIS") and keyword[5:].isdigit())
        ):
            continue
        key = keyword.decode("ascii", "replace")
        if key in found:
            raise Unprocessable(f"product {name}: HDU {hdu}: card {key} appears twice")
        found[key] = card[10:].split(b"/", 1)[0].strip()
    return found


def _integer_card(
    name: str,
    hdu: int,
    cards: dict[str, bytes],
    key: str,
    low: int,
    high: int,
    default: int | None = None,
) -> int:
    """The integer value of card ``key``, checked to lie in ``[low, high]``.

    Raises
    ------
    Unprocessable
        The card is missing (without a default), not an integer, or out of range,
        naming the HDU and the card.
    """
    raw = cards.get(key)
    if raw is None:
        if default is None:
            raise Unprocessable(f"product {name}: HDU {hdu}: card {key} is missing")
        return default
    if not _INTEGER.fullmatch(raw):
        raise Unprocessable(
            f"product {name}: HDU {hdu}: card {key} = {raw.decode('ascii', 'replace')[:20]!r}"
            " is not an integer"
        )
    value = int(raw)
    if not low <= value <= high:
        raise Unprocessable(
            f"product {name}: HDU {hdu}: card {key} = {value} is out of range [{low}, {high}]"
        )
    return value


def _data_size(name: str, hdu: int, cards: list[bytes]) -> int:
    """Bytes of the data unit after a header, padded to whole FITS blocks.

    Every card that sizes the data unit is checked (FITS 4.0 sect. 4.4.1): BITPIX one
    of 8, 16, 32, 64, -32, -64; NAXIS in 0..999; each NAXISn, PCOUNT >= 0; GCOUNT >= 1;
    all below 2**63. The size itself is exact (Python integers, no overflow).

    Raises
    ------
    Unprocessable
        A card is missing, repeated, not an integer or out of range, naming the HDU
        (0-based) and the card.
    """
    found = _structural_cards(name, hdu, cards)
    bitpix = _integer_card(name, hdu, found, "BITPIX", -64, 64)
    if bitpix not in BITPIX_VALUES:
        raise Unprocessable(
            f"product {name}: HDU {hdu}: card BITPIX = {bitpix} is not one of "
            f"{sorted(BITPIX_VALUES)}"
        )
    naxis = _integer_card(name, hdu, found, "NAXIS", 0, 999)
    if naxis == 0:
        return 0
    axes = [
        _integer_card(name, hdu, found, f"NAXIS{i}", 0, _INT64 - 1) for i in range(1, naxis + 1)
    ]
    pcount = _integer_card(name, hdu, found, "PCOUNT", 0, _INT64 - 1, default=0)
    gcount = _integer_card(name, hdu, found, "GCOUNT", 1, _INT64 - 1, default=1)
    if hdu == 0 and found.get("GROUPS") == b"T" and axes[0] == 0:
        axes = axes[1:]  # random groups (primary only): NAXIS1 = 0 marks them, no axis
    size = abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))
    return -(-size // FITS_BLOCK) * FITS_BLOCK


def _fits_layout(name: str, data: bytes) -> list[tuple[list[bytes], int, int]]:
    """Each HDU's header cards, data start and data end (padded), walking the raw blocks.

    Bounded whatever the bytes: each HDU advances the offset by at least one block, a
    header holds at most :data:`MAX_HEADER_CARDS` cards, a file at most
    :data:`MAX_HDUS` HDUs, and every size is checked against the bytes present before
    anything is read. The cost is a scan of the header blocks (the data are not read).

    Raises
    ------
    Unprocessable
        A header or data unit runs past the end of ``data`` (a truncated file), a
        header has no END card, a card that sizes the data unit is invalid (naming
        the HDU and the card), or the file has more than :data:`MAX_HDUS` HDUs.
    """
    layout: list[tuple[list[bytes], int, int]] = []
    offset = 0
    size = len(data)
    while offset < size:
        hdu = len(layout)
        if hdu >= MAX_HDUS:
            raise Unprocessable(f"product {name} has more than {MAX_HDUS} HDUs")
        start = offset
        while True:
            if offset + FITS_BLOCK > size:
                raise Unprocessable(f"product {name} is a truncated FITS file (in a header)")
            found = _end_card(data, offset)
            offset += FITS_BLOCK
            if found:
                break
            if offset - start >= MAX_HEADER_CARDS * CARD:
                raise Unprocessable(
                    f"product {name}: HDU {hdu}: no END card in the first "
                    f"{MAX_HEADER_CARDS} header cards"
                )
        cards = [data[at : at + CARD] for at in range(start, offset, CARD)]
        end = offset + _data_size(name, hdu, cards)
        if end > size:
            raise Unprocessable(
                f"product {name} is a truncated FITS file: HDU {hdu} needs "
                f"{end - offset} data bytes, {size - offset} present"
            )
        layout.append((cards, offset, end))
        offset = end  # >= offset: a data unit's size is never negative
    return layout


def check_fits_layout(name: str, data: bytes) -> None:
    """Refuse bytes whose FITS structure is unsound, before astropy reads them.

    astropy's own reader spins for ever on some hostile headers (``fits.open`` on a
    binary table with ``PCOUNT = -5760`` never returns): call this first on bytes from
    outside. It costs a scan of the header blocks (~60 µs for a three-HDU event file).

    Raises
    ------
    Unprocessable
        As :func:`_fits_layout` (truncated file, invalid size card, too many HDUs),
        naming ``name``, the HDU and the card.
    """
    _fits_layout(name, data)


def content_digest(product: Product, data: bytes) -> str:
    """SHA-256 of a product's content: for FITS, ignoring DATE, CHECKSUM and DATASUM cards.

    Two FITS files with the same data and the same headers apart from those cards get
    the same digest; any other difference changes it.
    """
    if product.kind != "fits":
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    for cards, start, end in _fits_layout(product.name, data):
        kept = [c for c in cards if c[:8].decode("ascii", "replace").strip() not in VOLATILE]
        digest.update(b"".join(kept))
        digest.update(memoryview(data)[start:end])
    return digest.hexdigest()


# --- running -----------------------------------------------------------------------


def validate_config(bricks: Sequence[Brick], config: Mapping[str, Any] | None) -> dict:
    """Each brick's validated parameters from ``{brick name: {parameter: value}}``.

    Raises
    ------
    BadInput
        An unknown brick name, or a parameter a brick rejects (naming both).
    """
    config = dict(config or {})
    names = [b.name for b in bricks]
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise BadInput(f"config names unknown brick(s) {unknown}; valid: {names}")
    validated: dict[str, BrickConfig] = {}
    for brick in bricks:
        params = config.get(brick.name) or {}
        if not isinstance(params, Mapping):
            raise BadInput(f"config for brick {brick.name} must be a mapping of parameters")
        try:
            validated[brick.name] = brick.config(**params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise BadInput(f"config of brick {brick.name}: {problems}") from None
    return validated


def _check_calibration(bricks: Iterable[Brick], calibration: Mapping[str, Any]) -> None:
    for brick in bricks:
        missing = [c for c in brick.caldb if c not in calibration]
        if missing:
            raise NotFound(f"CALDB has no {missing} needed by brick {brick.name}")


def release_tables(value: Any) -> None:
    """Let the tables of a FITS product be freed without astropy copying them first.

    When a ``FITS_rec`` dies, astropy copies every column still tracked by a
    ``Column`` object, so that a detached column keeps its values; dropping a 650 MB
    L1 event list thus briefly allocates 650 MB more (the pipeline's peak memory at
    10⁷ events). Call this only on a product nobody reads any more: afterwards a
    ``Column`` that outlives its table has no values.
    """
    if not isinstance(value, fits.HDUList):
        return
    for hdu in value:
        data = hdu.__dict__.get("data")  # only what is loaded; never read a lazy HDU
        if isinstance(data, fits.FITS_rec):
            for column in list(getattr(data, "_col_weakrefs", ())):
                # an empty stand-in: nothing left to copy, no view keeping the rows
                column.array = np.empty(0, dtype=data.dtype[column.name].base)


def _last_use(bricks: Sequence[Brick]) -> dict[str, int]:
    last: dict[str, int] = {}
    for index, brick in enumerate(bricks):
        for product in brick.inputs:
            last[product.name] = index
    return last


def run_bricks(
    bricks: Sequence[Brick],
    products: Mapping[str, Any],
    calibration: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    on_product: ProductCallback | None = None,
    retain: bool = True,
) -> dict[str, Any]:
    """Run ``bricks`` in order on ``products``; every product they make.

    A brick whose required inputs are missing (an upstream brick found no work) or
    that raises :class:`NoWork` is skipped, and the skip is reported through
    ``progress`` with the reason. Other errors propagate.

    Parameters
    ----------
    bricks
        Bricks in dependency order.
    products
        The starting products (``{"l0": HDUList}``); never modified.
    calibration
        CALDB objects by codename; each brick receives the ones it declares.
    config
        ``{brick name: {parameter: value}}``; validated before any brick runs.
    progress
        Called with a :class:`ProgressEvent` at each start, finish and skip.
    on_product
        Called with each product as soon as it exists (to write it out early).
    retain
        Keep every product and return them all; with False, a product is dropped once
        no later brick reads it (bounded memory for big observations) and the result
        holds only what is left.
    """
    params = validate_config(bricks, config)
    _check_calibration(bricks, calibration)
    available = dict(products)
    made: dict[str, Any] = {}
    last_use = _last_use(bricks)
    total = len(bricks)
    report = progress or (lambda event: None)
    for index, brick in enumerate(bricks, start=1):
        missing = [p.name for p in brick.inputs if not p.optional and p.name not in available]
        if missing:
            report(ProgressEvent(brick.name, "skipped", index, total, f"no {', '.join(missing)}"))
            continue
        report(ProgressEvent(brick.name, "start", index, total))
        started = time.perf_counter()
        inputs = {p.name: available[p.name] for p in brick.inputs if p.name in available}
        own_caldb = {c: calibration[c] for c in brick.caldb}
        try:
            outputs = brick(inputs, own_caldb, params[brick.name])
        except NoWork as exc:
            report(ProgressEvent(brick.name, "skipped", index, total, exc.reason))
            continue
        seconds = time.perf_counter() - started  # the brick's own time, not the writing
        declared = {p.name: p for p in brick.outputs}
        absent = [n for n, p in declared.items() if not p.optional and n not in outputs]
        extra = sorted(set(outputs) - set(declared))
        if absent or extra:
            raise RuntimeError(
                f"brick {brick.name} broke its declaration: missing {absent}, undeclared {extra}"
            )
        for name, value in outputs.items():
            available[name] = value
            made[name] = value
            if on_product is not None:
                on_product(declared[name], value, brick)
        if not retain:
            for name in [n for n in available if last_use.get(n, -1) < index]:
                if made.pop(name, None) is not None:  # never the caller's own inputs
                    release_tables(available[name])
                available.pop(name)
            inputs = outputs = {}  # let go of what was dropped before the next brick
        report(ProgressEvent(brick.name, "done", index, total, seconds=seconds))
    return made


def run_pipeline(
    l0: fits.HDUList,
    calibration: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    on_product: ProductCallback | None = None,
    retain: bool = True,
) -> dict[str, Any]:
    """Every registered brick on one L0 observation, in ToO order; all the products.

    See :func:`run_bricks` for the parameters; ``l0`` is the raw observation file.
    """
    from bricks.registry import all_bricks

    return run_bricks(all_bricks(), {"l0": l0}, calibration, config, progress, on_product, retain)


def declared_products(bricks: Iterable[Brick]) -> dict[str, Product]:
    """Every output product of ``bricks`` by name (for file names and kinds)."""
    return {p.name: p for brick in bricks for p in brick.outputs}
