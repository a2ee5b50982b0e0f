"""The one adapter between the object store and every brick: keys in, keys out.

A brick function's handler is a thin shell over :func:`run_brick`:

request ``{run_id, task_id, inputs: {name: ref}, config, caldb: {codename: ref}}`` →
read each object → deserialise (``bricks.pipeline``) → run the pure brick →
serialise → write ``products/<run_id>/<brick>/<file>`` → answer with each output's
reference, sha256 and size, and the provenance of the call.

References are ``<bucket>/<key>``. Output keys derive from the run and the brick (a
brick runs once per run), so a redelivered call rewrites the same objects with the
same content instead of adding new ones; each write is atomic in the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bricks.base import Brick, Product
from bricks.errors import BadInput, MxtError, NotFound, Unprocessable

PRODUCTS_BUCKET = "products"
REF_PATTERN = r"^[a-z0-9-]{3,63}/[^\s]{1,1000}$"


class BrickRequest(BaseModel):
    """What the orchestrator sends a brick function."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    task_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    inputs: dict[str, str] = Field(description="product name → <bucket>/<key>")
    config: dict[str, Any] = Field(default_factory=dict)
    config_version: int | None = None
    caldb: dict[str, str] = Field(default_factory=dict, description="codename → caldb/<key>")


class ObjectRef(BaseModel):
    """A stored object: its reference, sha256 (hex) and size (bytes)."""

    ref: str
    sha256: str
    size: int


class BrickResponse(BaseModel):
    """What a brick function answers: its outputs and the provenance of the call."""

    brick: str
    version: str
    run_id: str
    task_id: str
    outputs: dict[str, ObjectRef]
    provenance: dict[str, Any]


def split_ref(ref: str) -> tuple[str, str]:
    """``"bucket/key"`` → ``(bucket, key)``; ``BadInput`` naming the reference otherwise."""
    bucket, _, key = ref.partition("/")
    if not bucket or not key:
        raise BadInput(f"object reference {ref!r} is not <bucket>/<key>")
    return bucket, key


def output_ref(run_id: str, brick: str, product: Product) -> str:
    """Where a run's brick writes a product: ``products/<run_id>/<brick>/<file>``."""
    return f"{PRODUCTS_BUCKET}/{run_id}/{brick}/{product.filename}"


def run_brick(brick: Brick, request: BrickRequest, store: Any, log: Any = None) -> BrickResponse:
    """Read the inputs, run ``brick``, write its outputs; the whole claim-check round trip.

    Parameters
    ----------
    brick
        The brick (``bricks.registry.get_brick``).
    request
        Input and CALDB references, parameters, run and task ids.
    store
        The object store (``storage.objects.get_store()``).
    log
        A logger for progress lines (the call's ``context.log``).

    Raises
    ------
    BadInput
        Unknown or missing inputs, invalid parameters, a missing object (named).
    Unprocessable
        An input object cannot be decoded as the product it should be.
    """
    from bricks.pipeline import deserialise_product, serialise_product

    started = datetime.now(UTC)
    clock = time.perf_counter()
    config = _config(brick, request.config)
    declared = {p.name: p for p in brick.inputs}
    unknown = sorted(set(request.inputs) - set(declared))
    if unknown:
        raise BadInput(
            f"brick {brick.name}: unknown input(s) {unknown}; inputs: {sorted(declared)}"
        )
    inputs: dict[str, Any] = {}
    input_provenance: list[dict[str, Any]] = []
    for name, ref in request.inputs.items():
        data = _read(store, ref, f"input {name}")
        input_provenance.append(
            {"name": name, "ref": ref, "sha256": hashlib.sha256(data).hexdigest()}
        )
        try:
            inputs[name] = deserialise_product(declared[name], data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the data's
            raise Unprocessable(
                f"brick {brick.name}: input {name} ({ref}) unreadable: {exc}"
            ) from None
    calibration, caldb_provenance = _calibration(brick, request.caldb, store)
    read = time.perf_counter() - clock
    outputs = brick(inputs, calibration, config)
    ran = time.perf_counter() - clock - read
    written: dict[str, ObjectRef] = {}
    for product in brick.outputs:
        if product.name not in outputs or outputs[product.name] is None:
            if not product.optional:
                raise Unprocessable(f"brick {brick.name} did not produce {product.name}")
            continue
        written[product.name] = _write(
            store,
            output_ref(request.run_id, brick.name, product),
            serialise_product(product, outputs[product.name]),
            request,
            brick,
        )
    elapsed = time.perf_counter() - clock
    if log is not None:
        # one line per call: every line costs the stack a log record on the hot path
        log.info(
            "brick %s: read %d input(s) in %.3f s, ran in %.3f s, wrote %d product(s) in %.3f s",
            brick.name,
            len(inputs),
            read,
            ran,
            len(written),
            elapsed - read - ran,
        )
    return BrickResponse(
        brick=brick.name,
        version=brick.version,
        run_id=request.run_id,
        task_id=request.task_id,
        outputs=written,
        provenance={
            "brick": brick.name,
            "brick_version": brick.version,
            "config": config.model_dump(mode="json"),
            "config_version": request.config_version,
            "caldb_files": caldb_provenance,
            "inputs": input_provenance,
            "run_id": request.run_id,
            "task_id": request.task_id,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "seconds": round(elapsed, 4),
        },
    )


def _config(brick: Brick, config: dict[str, Any]) -> Any:
    try:
        return brick.config(**config)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise BadInput(f"brick {brick.name}: config field {field!r}: {first['msg']}") from None


def _read(store: Any, ref: str, what: str) -> bytes:
    bucket, key = split_ref(ref)
    try:
        return store.get(bucket, key)
    except NotFound:
        raise BadInput(f"{what}: no object {ref}") from None


def _write(store: Any, ref: str, data: bytes, request: BrickRequest, brick: Brick) -> ObjectRef:
    bucket, key = split_ref(ref)
    info = store.put(
        bucket,
        key,
        data,
        metadata={
            "run-id": request.run_id,
            "task-id": request.task_id,
            "brick": f"{brick.name}/{brick.version}",
        },
    )
    return ObjectRef(
        ref=ref, sha256=info.sha256 or hashlib.sha256(data).hexdigest(), size=info.size
    )


def _calibration(
    brick: Brick, caldb: dict[str, str], store: Any
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    missing = [c for c in brick.caldb if c not in caldb]
    if missing:
        raise BadInput(f"brick {brick.name}: no CALDB file given for codename(s) {missing}")
    calibration: dict[str, Any] = {}
    provenance: list[dict[str, str]] = []
    for codename in brick.caldb:
        ref = caldb[codename]
        bucket, key = split_ref(ref)
        try:
            sha256 = store.head(bucket, key).sha256 or ""
        except NotFound:
            raise BadInput(f"brick {brick.name}: CALDB {codename}: no object {ref}") from None
        products = _calibration_file(store, ref, sha256)
        if codename not in products:
            raise Unprocessable(f"CALDB file {ref} holds no {codename} extension (CCNM0001)")
        calibration[codename] = products[codename]
        provenance.append({"codename": codename, "ref": ref, "sha256": sha256})
    return calibration, provenance


@lru_cache(maxsize=64)
def _calibration_file(store: Any, ref: str, sha256: str) -> dict[str, Any]:
    """The calibration products of one CALDB file; cached per content (sha256) per process."""
    import io

    from astropy.io import fits

    from bricks.calibration import calibration_from_hdulist

    bucket, key = split_ref(ref)
    with fits.open(io.BytesIO(store.get(bucket, key))) as hdul:
        return calibration_from_hdulist(hdul)


def warm_up() -> None:
    """Pay at process start what the first call would: the product codecs and the store.

    A store that cannot be reached yet is left for the first call to report.
    """
    import bricks.pipeline  # noqa: F401 - astropy.io.fits and the (de)serialisers
    from storage.objects import get_store

    with contextlib.suppress(MxtError):
        get_store()


def run_brick_function(brick: Brick, request: BrickRequest, log: Any = None) -> BrickResponse:
    """What every ``functions/brick-<name>`` handler does: run its brick on the object store."""
    from storage.objects import get_store

    return run_brick(brick, request, get_store(), log)
