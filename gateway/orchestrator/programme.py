"""Programme pipelines as data: a DAG of bricks with parameters, checked against the bricks.

A programme (ToO, CP, GP) is a configdb configuration (``storage.configdb.ConfigSpec``:
``dag`` of ``{brick, needs, params}`` and programme ``parameters``), seeded from the
YAML files in ``programmes/``. Before a run the DAG is resolved here: each brick's
declared inputs are found among the outputs of the bricks it (transitively) needs,
so a programme whose edges do not carry the products its bricks read fails at load,
naming the brick and the product, and never mid-run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bricks.errors import BadInput
from storage.configdb import ConfigSpec

PROGRAMME_DIR = Path(__file__).parent / "programmes"

#: The product every run starts from: the raw L0 file.
RAW_PRODUCT = "l0"
RAW_PRODUCER = "raw"

#: FITS ``PROGRAM`` header values and the programme that processes them.
PROGRAMME_OF_HEADER: dict[str, str] = {
    "CoreProgram": "CP",
    "GeneralProgram": "GP",
    "TargetOfOpportunity-Nom": "ToO",
    "TargetOfOpportunity-Ex": "ToO",
    "TargetOfOpportunity-MM": "ToO",
    "Calibration": "GP",
}


class ProgrammeParameters(BaseModel):
    """Programme-level parameters (``parameters`` of the configuration).

    Parameters
    ----------
    description
        One line for people.
    retries
        Extra attempts the orchestrator makes of a brick call that failed transiently
        for good (the queue worker has already retried it with backoff).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    retries: int = Field(default=1, ge=0, le=5)


@dataclass(frozen=True)
class BrickIO:
    """What the DAG needs to know of a brick: product names in and out, CALDB codenames."""

    inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    caldb: tuple[str, ...]
    version: str


def brick_io(name: str) -> BrickIO:
    """The declared inputs, outputs and CALDB needs of brick ``name`` (from the registry)."""
    from bricks.registry import get_brick

    brick = get_brick(name)
    return BrickIO(
        inputs=tuple(p.name for p in brick.inputs if not p.optional),
        optional_inputs=tuple(p.name for p in brick.inputs if p.optional),
        outputs=tuple(p.name for p in brick.outputs),
        caldb=tuple(brick.caldb),
        version=brick.version,
    )


@dataclass(frozen=True)
class TaskNode:
    """One brick of a resolved DAG.

    Parameters
    ----------
    brick
        The brick, also the task's name within its run.
    needs
        Bricks that must succeed first.
    inputs
        Input product name → the brick producing it (``"raw"`` for the L0 file).
    params
        The brick's parameters.
    caldb
        CALDB codenames the brick needs.
    required
        The inputs the brick cannot run without (its non-optional inputs).
    """

    brick: str
    needs: tuple[str, ...]
    inputs: dict[str, str]
    params: dict[str, Any]
    caldb: tuple[str, ...]
    required: tuple[str, ...] = ()

    @property
    def function(self) -> str:
        """The function that runs this brick."""
        return f"brick-{self.brick}"


@dataclass(frozen=True)
class Dag:
    """A programme configuration resolved into tasks, in topological order."""

    programme: str
    parameters: ProgrammeParameters
    nodes: dict[str, TaskNode]
    order: tuple[str, ...]

    def caldb_codenames(self) -> list[str]:
        """Every CALDB codename any brick of the programme needs, sorted."""
        return sorted({c for node in self.nodes.values() for c in node.caldb})


def build_dag(spec: ConfigSpec, describe: Callable[[str], BrickIO] = brick_io) -> Dag:
    """Resolve a configuration into a DAG and check it against the brick declarations.

    Parameters
    ----------
    spec
        The programme configuration (acyclic, needs known: ``ConfigSpec`` checked it).
    describe
        Brick name → its declared I/O (the brick registry by default).

    Raises
    ------
    BadInput
        An unknown brick, a product produced twice, an input no needed brick produces,
        invalid brick or programme parameters; the message names the brick and field.
    """
    where = f"programme {spec.programme}"
    try:
        parameters = ProgrammeParameters(**spec.parameters)
    except ValidationError as exc:
        raise BadInput(f"{where}: parameters: {_first_error(exc)}") from None
    ios = {}
    for node in spec.dag:
        try:
            ios[node.brick] = describe(node.brick)
        except KeyError as exc:
            raise BadInput(f"{where}: {exc.args[0]}") from None
    producer = _producers(where, ios)
    needs = {node.brick: tuple(node.needs) for node in spec.dag}
    nodes = {}
    for node in spec.dag:
        io = ios[node.brick]
        inputs = _resolve_inputs(where, node.brick, io, producer, _ancestors(node.brick, needs))
        _check_params(where, node.brick, node.params)
        nodes[node.brick] = TaskNode(
            node.brick, needs[node.brick], inputs, node.params, io.caldb, io.inputs
        )
    return Dag(spec.programme, parameters, nodes, _topological_order(needs))


def _producers(where: str, ios: Mapping[str, BrickIO]) -> dict[str, str]:
    producer = {RAW_PRODUCT: RAW_PRODUCER}
    for brick, io in ios.items():
        for product in io.outputs:
            if product in producer:
                raise BadInput(
                    f"{where}: product {product!r} is produced by both "
                    f"{producer[product]!r} and {brick!r}"
                )
            producer[product] = brick
    return producer


def _ancestors(brick: str, needs: Mapping[str, tuple[str, ...]]) -> set[str]:
    seen: set[str] = set()
    stack = list(needs[brick])
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(needs[current])
    return seen


def _resolve_inputs(
    where: str, brick: str, io: BrickIO, producer: Mapping[str, str], ancestors: set[str]
) -> dict[str, str]:
    inputs = {}
    for product in io.inputs + io.optional_inputs:
        source = producer.get(product)
        if source is None and product in io.optional_inputs:
            continue
        if source is None:
            raise BadInput(f"{where}: no brick produces {product!r}, an input of {brick!r}")
        if source != RAW_PRODUCER and source not in ancestors:
            raise BadInput(
                f"{where}: brick {brick!r} reads {product!r} from {source!r} but does not "
                f"need {source!r}"
            )
        inputs[product] = source
    return inputs


def _check_params(where: str, brick: str, params: Mapping[str, Any]) -> None:
    """Validate a brick's parameters now, so a bad programme fails at load, not mid-run."""
    from bricks.registry import get_brick

    try:
        get_brick(brick).config(**params)
    except ValidationError as exc:
        raise BadInput(f"{where}: brick {brick} params: {_first_error(exc)}") from None


def _topological_order(needs: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    order: list[str] = []
    pending = list(needs)
    while pending:
        ready = [b for b in pending if set(needs[b]) <= set(order)]
        order.extend(ready)
        pending = [b for b in pending if b not in order]
    return tuple(order)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(x) for x in error["loc"]) or "document"
    return f"field {field!r}: {error['msg']}"


def builtin_programme_files() -> list[Path]:
    """The programme YAML files shipped in the repository."""
    return sorted(PROGRAMME_DIR.glob("*.yml"))


def programme_for_header(program_header: str) -> str:
    """The programme processing an observation whose FITS ``PROGRAM`` is ``program_header``."""
    try:
        return PROGRAMME_OF_HEADER[program_header]
    except KeyError:
        raise BadInput(
            f"PROGRAM header {program_header!r} names no programme; valid: "
            f"{sorted(PROGRAMME_OF_HEADER)}"
        ) from None
