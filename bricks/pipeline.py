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


def _data_size(header: fits.Header) -> int:
    """Bytes of the data unit after a header, padded to whole FITS blocks."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    elements = int(np.prod([int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]))
    if header.get("GROUPS") and int(header.get("NAXIS1", 0)) == 0:
        elements = int(np.prod([int(header[f"NAXIS{i}"]) for i in range(2, naxis + 1)]))
    size = (
        abs(int(header["BITPIX"]))
        // 8
        * int(header.get("GCOUNT", 1))
        * (int(header.get("PCOUNT", 0)) + elements)
    )
    return -(-size // FITS_BLOCK) * FITS_BLOCK


def _fits_layout(name: str, data: bytes) -> list[tuple[list[bytes], int, int]]:
    """Each HDU's header cards, data start and data end (padded), walking the raw blocks.

    Raises
    ------
    Unprocessable
        A header or data unit runs past the end of ``data`` (a truncated file).
    """
    layout = []
    offset = 0
    while offset < len(data):
        cards: list[bytes] = []
        while True:
            if offset + FITS_BLOCK > len(data):
                raise Unprocessable(f"product {name} is a truncated FITS file (in a header)")
            block = data[offset : offset + FITS_BLOCK]
            offset += FITS_BLOCK
            cards.extend(block[i : i + CARD] for i in range(0, FITS_BLOCK, CARD))
            if any(card.rstrip() == b"END" for card in cards[-36:]):
                break
        try:
            header = fits.Header.fromstring(b"".join(cards).decode("ascii"))
            end = offset + _data_size(header)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise Unprocessable(f"product {name} has an unreadable FITS header: {exc}") from exc
        if end > len(data):
            raise Unprocessable(
                f"product {name} is a truncated FITS file: HDU {len(layout)} needs "
                f"{end - offset} data bytes, {len(data) - offset} present"
            )
        layout.append((cards, offset, end))
        offset = end
    return layout


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
