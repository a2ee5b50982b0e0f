"""missiondb: observations, runs, tasks, products (with provenance), async calls, logs.

Writes are insert-or-get on the caller's identifiers, so a redelivered message
repeats a write harmlessly. State changes are compare-and-set
(``UPDATE … WHERE id = … AND state IN (…)``), so when two tasks finish at once
exactly one caller wins each transition. Functions take a session and never commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, Field, ValidationError, model_validator
from sqlalchemy import exc
from sqlalchemy.orm import Session

from bricks.errors import BadInput, Conflict, NotFound
from storage.db.base import Base, utcnow
from storage.db.models import (
    CALL_STATES,
    RUN_STATES,
    TASK_STATES,
    AsyncCall,
    LogEntry,
    Observation,
    Product,
    Run,
    Task,
)
from storage.keys import validate_bucket, validate_key
from storage.schemas import (
    Identifier,
    Limit,
    LongText,
    RecordModel,
    RowId,
    Sha256,
    ShortText,
    StrictModel,
    Text32,
    Text128,
    Version,
)

Model = TypeVar("Model", bound=Base)
RunState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
TaskState = Literal[
    "pending", "dispatched", "running", "succeeded", "failed", "cancelled", "skipped"
]
CallState = Literal["queued", "running", "succeeded", "failed", "dead"]
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
TERMINAL_STATES = {"succeeded", "failed", "cancelled", "skipped", "dead"}
assert set(RunState.__args__) == set(RUN_STATES)  # type: ignore[attr-defined]
assert set(TaskState.__args__) == set(TASK_STATES)  # type: ignore[attr-defined]
assert set(CallState.__args__) == set(CALL_STATES)  # type: ignore[attr-defined]


class ObjectKeyModel(StrictModel):
    """A model holding an object key, validated like the object store validates it."""

    @model_validator(mode="after")
    def _keys_are_safe(self) -> ObjectKeyModel:
        for name in ("raw_key", "key"):
            value = getattr(self, name, None)
            if value is not None:
                validate_key(value)
        for name in ("raw_bucket", "bucket"):
            value = getattr(self, name, None)
            if value is not None:
                validate_bucket(value)
        return self


# -- observations ---------------------------------------------------------------------
class ObservationSpec(ObjectKeyModel):
    """An observation to register."""

    obs_id: Identifier
    programme: Literal["GP", "CP", "ToO"] | None = None
    object_name: Text128 | None = None
    ra: float | None = Field(default=None, ge=0, lt=360, description="degrees")
    dec: float | None = Field(default=None, ge=-90, le=90, description="degrees")
    tstart: AwareDatetime | None = None
    tstop: AwareDatetime | None = None
    burst_id: Identifier | None = None
    trigger_time: AwareDatetime | None = None
    raw_bucket: str = "raw"
    raw_key: str = Field(max_length=1024)
    raw_sha256: Sha256 | None = None


class ObservationRecord(RecordModel):
    """A registered observation."""

    obs_id: str
    programme: str | None
    object_name: str | None
    ra: float | None
    dec: float | None
    tstart: datetime | None
    tstop: datetime | None
    burst_id: str | None
    trigger_time: datetime | None
    raw_bucket: str
    raw_key: str
    raw_sha256: str | None
    registered_at: datetime


def _insert_or_get(
    session: Session, row: Model, existing: sa.Select[tuple[Model]]
) -> tuple[Model, bool]:
    """Insert ``row`` unless ``existing`` finds one; a concurrent insert is tolerated."""
    found = session.scalar(existing)
    if found is not None:
        return found, False
    try:
        with session.begin_nested():
            session.add(row)
    except exc.IntegrityError:
        found = session.scalar(existing)
        if found is None:
            raise
        return found, False
    return row, True


def _same(row: Base, values: dict[str, Any], fields: Iterable[str]) -> list[str]:
    """The fields whose stored value differs from the requested one."""
    return [f for f in fields if values.get(f) is not None and getattr(row, f) != values[f]]


def register_observation(session: Session, spec: ObservationSpec) -> tuple[ObservationRecord, bool]:
    """Insert-or-get by ``obs_id``; return the record and whether it was created.

    Raises
    ------
    Conflict
        The obs_id exists with another raw file.
    """
    values = spec.model_dump()
    row, created = _insert_or_get(
        session,
        Observation(**values, registered_at=utcnow()),
        sa.select(Observation).where(Observation.obs_id == spec.obs_id),
    )
    differing = [] if created else _same(row, values, ("raw_key", "raw_sha256"))
    if differing:
        raise Conflict(
            f"observation {spec.obs_id} exists with another {', '.join(differing)}",
            obs_id=spec.obs_id,
        )
    return ObservationRecord.model_validate(row), created


def get_observation(session: Session, obs_id: str) -> ObservationRecord:
    """The observation ``obs_id``."""
    row = session.scalar(sa.select(Observation).where(Observation.obs_id == obs_id))
    if row is None:
        raise NotFound(f"observation {obs_id} not found", obs_id=obs_id)
    return ObservationRecord.model_validate(row)


# -- runs and tasks -------------------------------------------------------------------
class RunSpec(StrictModel):
    """A run to create, with the bricks of its DAG as tasks."""

    run_id: Identifier
    obs_id: Identifier | None = None
    programme: Literal["GP", "CP", "ToO"]
    config_version: Version | None = None
    caldb_version: Text32 | None = None
    caldb_date: AwareDatetime | None = None
    parent_run_id: Identifier | None = None
    bricks: list[Identifier] = Field(default_factory=list, max_length=64)


class RunRecord(RecordModel):
    """A run and its state."""

    run_id: str
    obs_id: str | None
    programme: str
    config_version: int | None
    caldb_version: str | None
    caldb_date: datetime | None
    state: str
    reason: str | None
    parent_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TaskRecord(RecordModel):
    """A task and its state."""

    task_id: str
    run_id: str
    brick: str
    state: str
    attempts: int
    call_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


def task_id_for(run_id: str, brick: str) -> str:
    """The task identifier of ``brick`` in ``run_id``."""
    return f"{run_id}.{brick}"


def create_run(session: Session, spec: RunSpec) -> tuple[RunRecord, bool]:
    """Insert-or-get the run by ``run_id`` and its tasks (state ``pending``)."""
    if spec.obs_id is not None:
        get_observation(session, spec.obs_id)
    values = spec.model_dump(exclude={"bricks"})
    row, created = _insert_or_get(
        session,
        Run(**values, state="pending", created_at=utcnow()),
        sa.select(Run).where(Run.run_id == spec.run_id),
    )
    for brick in spec.bricks:
        task_id = task_id_for(spec.run_id, brick)
        _insert_or_get(
            session,
            Task(task_id=task_id, run_id=spec.run_id, brick=brick, state="pending"),
            sa.select(Task).where(Task.task_id == task_id),
        )
    return RunRecord.model_validate(row), created


def get_run(session: Session, run_id: str) -> RunRecord:
    """The run ``run_id``."""
    row = session.scalar(sa.select(Run).where(Run.run_id == run_id))
    if row is None:
        raise NotFound(f"run {run_id} not found", run_id=run_id)
    return RunRecord.model_validate(row)


def _timestamps(to_state: str) -> dict[str, datetime]:
    if to_state == "running":
        return {"started_at": utcnow()}
    if to_state in TERMINAL_STATES:
        return {"finished_at": utcnow()}
    return {}


def transition_run(
    session: Session,
    run_id: str,
    from_states: Iterable[str],
    to_state: str,
    reason: str | None = None,
) -> bool:
    """Compare-and-set a run's state; True if this call made the change."""
    values: dict[str, Any] = {"state": to_state, **_timestamps(to_state)}
    if reason is not None:
        values["reason"] = reason
    result = session.execute(
        sa.update(Run)
        .where(Run.run_id == run_id, Run.state.in_(list(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def transition_task(
    session: Session,
    task_id: str,
    from_states: Iterable[str],
    to_state: str,
    *,
    call_id: str | None = None,
    error: str | None = None,
    count_attempt: bool = False,
) -> bool:
    """Compare-and-set a task's state; True if this call made the change.

    ``count_attempt`` increments ``attempts`` in the same statement (on dispatch).
    """
    values: dict[str, Any] = {"state": to_state, **_timestamps(to_state)}
    if call_id is not None:
        values["call_id"] = call_id
    if error is not None:
        values["error"] = error
    if count_attempt:
        values["attempts"] = Task.attempts + 1
    result = session.execute(
        sa.update(Task)
        .where(Task.task_id == task_id, Task.state.in_(list(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def run_tasks(session: Session, run_id: str) -> list[TaskRecord]:
    """The tasks of a run, in creation order."""
    rows = session.scalars(sa.select(Task).where(Task.run_id == run_id).order_by(Task.id))
    return [TaskRecord.model_validate(row) for row in rows]


# -- products -------------------------------------------------------------------------
class Provenance(BaseModel):
    """Where a product comes from: enough to reproduce it."""

    model_config = {"extra": "allow"}

    brick: ShortText
    brick_version: ShortText
    config_version: int | None = None
    caldb_files: list[dict[str, Any]] = Field(default_factory=list, max_length=256)
    inputs: list[dict[str, Any]] = Field(default_factory=list, max_length=256)
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None


class ProductSpec(ObjectKeyModel):
    """A product to register."""

    run_id: Identifier
    task_id: Identifier | None = None
    name: Identifier
    bucket: str = "products"
    key: str = Field(max_length=1024)
    sha256: Sha256
    size: int = Field(ge=0, le=2**63 - 1, description="bytes")
    content_type: Text128 = "application/octet-stream"
    provenance: Provenance


class ProductRecord(RecordModel):
    """A registered product."""

    run_id: str
    task_id: str | None
    name: str
    bucket: str
    key: str
    sha256: str
    size: int
    content_type: str
    provenance: dict[str, Any]
    partial: bool
    created_at: datetime


#: run states after which a product that still arrives is kept, marked partial
ENDED_RUN_STATES = ("succeeded", "failed", "cancelled")


def register_product(session: Session, spec: ProductSpec) -> tuple[ProductRecord, bool]:
    """Insert-or-get by (run, name); the same name with other content is a Conflict."""
    return register_products(session, [spec])[0]


def register_products(
    session: Session, specs: Sequence[ProductSpec], run: RunRecord | None = None
) -> list[tuple[ProductRecord, bool]]:
    """Insert-or-get products of one run by (run, name), reading what exists at once.

    The same name with the same key and checksum is a repeat (``created`` False); a
    product arriving after its run ended is kept and marked partial.

    Parameters
    ----------
    run
        The products' run when the caller has read it in this transaction already.

    Returns
    -------
    list of (ProductRecord, bool)
        Each product's record and whether this call created it, in ``specs`` order.

    Raises
    ------
    BadInput
        The batch spans several runs or names a product twice.
    NotFound
        The run does not exist.
    Conflict
        A name exists with another key or checksum.
    """
    if not specs:
        return []
    run_ids = {spec.run_id for spec in specs}
    if len(run_ids) > 1:
        raise BadInput(f"a batch of products belongs to one run, not {sorted(run_ids)}")
    names = [spec.name for spec in specs]
    if len(set(names)) < len(names):
        raise BadInput(f"a batch names a product twice: {names}")
    if run is None or run.run_id != specs[0].run_id:
        run = get_run(session, specs[0].run_id)
    partial = run.state in ENDED_RUN_STATES
    try:
        with session.begin_nested():
            return _insert_new_products(session, specs, partial)
    except exc.IntegrityError:
        # a concurrent registration won a name: a second read finds it
        return _insert_new_products(session, specs, partial)


def _insert_new_products(
    session: Session, specs: Sequence[ProductSpec], partial: bool
) -> list[tuple[ProductRecord, bool]]:
    run_id = specs[0].run_id
    existing = {
        row.name: row
        for row in session.scalars(
            sa.select(Product).where(
                Product.run_id == run_id, Product.name.in_([spec.name for spec in specs])
            )
        )
    }
    rows: list[tuple[Product, bool]] = []
    now = utcnow()
    for spec in specs:
        values = spec.model_dump(mode="json")
        row = existing.get(spec.name)
        if row is None:
            row = Product(**values, partial=partial, created_at=now)
            session.add(row)
            rows.append((row, True))
            continue
        differing = _same(row, values, ("key", "sha256"))
        if differing:
            raise Conflict(
                f"product {spec.name} of run {run_id} exists with another {', '.join(differing)}",
                run_id=run_id,
                name=spec.name,
            )
        rows.append((row, False))
    session.flush()
    return [(ProductRecord.model_validate(row), created) for row, created in rows]


def mark_products_partial(session: Session, run_id: str) -> int:
    """Mark every product of a failed run as partial; return how many."""
    result = session.execute(
        sa.update(Product).where(Product.run_id == run_id).values(partial=True)
    )
    return result.rowcount


# -- async calls ----------------------------------------------------------------------
class CallSpec(StrictModel):
    """An asynchronous invocation to record."""

    call_id: Identifier
    function: Identifier
    run_id: Identifier | None = None
    task_id: Identifier | None = None
    callback_url: str | None = Field(default=None, max_length=2048)


class CallRecord(RecordModel):
    """An asynchronous invocation and its outcome."""

    call_id: str
    function: str
    state: str
    attempts: int
    status_code: int | None
    run_id: str | None
    task_id: str | None
    callback_url: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def record_call(session: Session, spec: CallSpec) -> tuple[CallRecord, bool]:
    """Insert-or-get the call by ``call_id`` (state ``queued``)."""
    now = utcnow()
    row, created = _insert_or_get(
        session,
        AsyncCall(**spec.model_dump(), state="queued", created_at=now, updated_at=now),
        sa.select(AsyncCall).where(AsyncCall.call_id == spec.call_id),
    )
    return CallRecord.model_validate(row), created


def transition_call(
    session: Session,
    call_id: str,
    from_states: Iterable[str],
    to_state: str,
    *,
    status_code: int | None = None,
    error: str | None = None,
    count_attempt: bool = False,
) -> bool:
    """Compare-and-set a call's state; True if this call made the change."""
    values: dict[str, Any] = {"state": to_state, "updated_at": utcnow()}
    if to_state in TERMINAL_STATES:
        values["finished_at"] = values["updated_at"]
    if status_code is not None:
        values["status_code"] = status_code
    if error is not None:
        values["error"] = error
    if count_attempt:
        values["attempts"] = AsyncCall.attempts + 1
    result = session.execute(
        sa.update(AsyncCall)
        .where(AsyncCall.call_id == call_id, AsyncCall.state.in_(list(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# -- logs -----------------------------------------------------------------------------
class LogSpec(StrictModel):
    """One structured log line."""

    time: AwareDatetime
    level: Level
    message: LongText
    run_id: Identifier | None = None
    task_id: Identifier | None = None
    function: Identifier | None = None
    call_id: Identifier | None = None
    extra: dict[str, Any] | None = None


class LogRecord(RecordModel):
    """A stored log line; ``id`` orders lines and continues a query."""

    id: int
    time: datetime
    level: str
    message: str
    run_id: str | None
    task_id: str | None
    function: str | None
    call_id: str | None
    extra: dict[str, Any] | None


def append_logs(session: Session, lines: Iterable[LogSpec]) -> int:
    """Store log lines; return how many."""
    rows = [
        LogEntry(**line.model_dump(), levelno=logging.getLevelNamesMapping()[line.level])
        for line in lines
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


# -- queries --------------------------------------------------------------------------
class ObservationFilter(StrictModel):
    """Filters of observation queries (equality)."""

    obs_id: Identifier | None = None
    programme: str | None = None
    burst_id: Identifier | None = None
    object_name: ShortText | None = None


class RunFilter(StrictModel):
    """Filters of run queries (equality)."""

    run_id: Identifier | None = None
    obs_id: Identifier | None = None
    programme: str | None = None
    state: RunState | None = None


class TaskFilter(StrictModel):
    """Filters of task queries (equality)."""

    run_id: Identifier | None = None
    task_id: Identifier | None = None
    brick: Identifier | None = None
    state: TaskState | None = None


class ProductFilter(StrictModel):
    """Filters of product queries (equality)."""

    run_id: Identifier | None = None
    task_id: Identifier | None = None
    name: Identifier | None = None


class CallFilter(StrictModel):
    """Filters of async-call queries (equality)."""

    call_id: Identifier | None = None
    function: Identifier | None = None
    state: CallState | None = None
    run_id: Identifier | None = None


class LogFilter(StrictModel):
    """Filters of log queries: equality, ``level`` as a minimum, ``since``/``until`` times."""

    run_id: Identifier | None = None
    task_id: Identifier | None = None
    function: Identifier | None = None
    call_id: Identifier | None = None
    level: Level | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


Entity = Literal["observations", "runs", "tasks", "products", "calls", "logs"]
ENTITIES: dict[str, tuple[type[Base], type[StrictModel], type[RecordModel]]] = {
    "observations": (Observation, ObservationFilter, ObservationRecord),
    "runs": (Run, RunFilter, RunRecord),
    "tasks": (Task, TaskFilter, TaskRecord),
    "products": (Product, ProductFilter, ProductRecord),
    "calls": (AsyncCall, CallFilter, CallRecord),
    "logs": (LogEntry, LogFilter, LogRecord),
}


class QueryRequest(StrictModel):
    """A missiondb query: an entity, filters, and keyset pagination on the row id.

    ``after`` is the ``next_after`` of the previous page.
    """

    entity: Entity
    filters: dict[str, Any] = Field(default_factory=dict)
    limit: Limit = 100
    after: RowId | None = None
    descending: bool = False

    @model_validator(mode="before")
    @classmethod
    def _gather_flat_filters(cls, data: Any) -> Any:
        """Accept filters beside the fields too (query parameters of a GET route)."""
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        flat = {k: v for k, v in data.items() if k not in own}
        if not flat:
            return data
        filters = data.get("filters")
        merged = {**(filters if isinstance(filters, dict) else {}), **flat}
        return {**{k: v for k, v in data.items() if k in own}, "filters": merged}

    @model_validator(mode="after")
    def _filters_fit_entity(self) -> QueryRequest:
        filter_model = ENTITIES[self.entity][1]
        try:
            parsed = filter_model.model_validate(self.filters)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise ValueError(f"filters.{field}: {error['msg']} (entity {self.entity})") from exc
        self.filters = parsed.model_dump(exclude_none=True)
        return self


class QueryPage(BaseModel):
    """One page of results; ``next_after`` continues, None at the end."""

    entity: str
    items: list[dict[str, Any]]
    next_after: int | None


def query(session: Session, request: QueryRequest) -> QueryPage:
    """Rows of ``request.entity`` matching the filters, ordered by id, one page."""
    model, _, record = ENTITIES[request.entity]
    statement = sa.select(model)
    for name, value in request.filters.items():
        statement = statement.where(_condition(model, name, value))
    if request.after is not None:
        statement = statement.where(
            model.id < request.after if request.descending else model.id > request.after
        )
    statement = statement.order_by(model.id.desc() if request.descending else model.id)
    rows = list(session.scalars(statement.limit(request.limit + 1)))
    more = len(rows) > request.limit
    rows = rows[: request.limit]
    return QueryPage(
        entity=request.entity,
        items=[record.model_validate(row).model_dump(mode="json") for row in rows],
        next_after=rows[-1].id if more else None,
    )


def _condition(model: type[Base], name: str, value: Any) -> sa.ColumnElement[bool]:
    if model is LogEntry and name == "level":
        return LogEntry.levelno >= logging.getLevelNamesMapping()[value]
    if model is LogEntry and name == "since":
        return LogEntry.time >= value
    if model is LogEntry and name == "until":
        return LogEntry.time < value
    return getattr(model, name) == value
