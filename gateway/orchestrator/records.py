"""missiondb as the orchestrator uses it: one read of a run, and the compare-and-set
transitions its state machine makes (each returns whether this caller won it).

Query functions take a session and never commit, except :func:`claim`, which is its
own transaction: claimed tasks must be visible to every other orchestrator at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bricks.errors import BadInput, NotFound
from gateway.events import ProductRegistered
from gateway.orchestrator import state as st
from gateway.orchestrator.dispatch import task_call_id
from gateway.orchestrator.programme import build_dag
from gateway.orchestrator.raw import RawObservation
from storage import configdb, missiondb
from storage.schemas import from_data

Overrides = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RunContext:
    """What dispatching needs of a run, read in one session."""

    run: missiondb.RunRecord
    tasks: dict[str, missiondb.TaskRecord]
    outputs: dict[str, str]
    caldb: dict[str, str]
    raw: str


def load_context(run_id: str) -> RunContext:
    """The run with its raw file, its tasks by brick, products and CALDB files, in one read."""
    with st.session() as db:
        return read_context(db, run_id)


def read_context(db: Session, run_id: str) -> RunContext:
    """:func:`load_context` in the caller's session (and transaction)."""
    found = db.execute(
        sa.select(st.Run, st.Observation.raw_bucket, st.Observation.raw_key)
        .outerjoin(st.Observation, st.Observation.obs_id == st.Run.obs_id)
        .where(st.Run.run_id == run_id)
    ).one_or_none()
    if found is None:
        raise NotFound(f"run {run_id} not found", run_id=run_id)
    run, raw_bucket, raw_key = found
    if raw_key is None:
        raise NotFound(f"run {run_id} has no observation")
    caldb = db.scalars(sa.select(st.RunCaldbFile).where(st.RunCaldbFile.run_id == run_id))
    return RunContext(
        run=missiondb.RunRecord.model_validate(run),
        tasks={t.brick: t for t in missiondb.run_tasks(db, run_id)},
        outputs=outputs_of(db, run_id),
        caldb={f.codename: f"{f.bucket}/{f.key}" for f in caldb},
        raw=f"{raw_bucket}/{raw_key}",
    )


def run_exists(run_id: str) -> bool:
    """Whether a run with this id exists."""
    with st.session() as db:
        return db.scalar(sa.select(st.Run.id).where(st.Run.run_id == run_id)) is not None


def transaction() -> Any:
    """A missiondb session in one transaction (``storage.db.engine.transaction``)."""
    from storage.db.engine import transaction

    return transaction(st.engine())


def config_version_with(
    db: Session, programme: str, version: int | None, overrides: Overrides
) -> int | None:
    """The configuration version to run: with overrides, a new inactive version holding them."""
    if not overrides:
        return version
    base = configdb.get_config(db, programme, version)
    bricks = {node["brick"] for node in base.dag}
    unknown = sorted(set(overrides) - bricks)
    if unknown:
        raise BadInput(
            f"config names brick(s) {unknown} not in {programme}; bricks: {sorted(bricks)}"
        )
    dag = [
        {**node, "params": {**node.get("params", {}), **overrides.get(node["brick"], {})}}
        for node in base.dag
    ]
    spec = configdb.ConfigSpec(
        programme=programme,
        dag=dag,
        parameters=base.parameters,
        comment=f"overrides of version {base.version}: {sorted(overrides)}",
    )
    build_dag(spec)
    record, _ = configdb.put_config(db, spec)
    return record.version


def register_observation(db: Session, observation: RawObservation, programme: str) -> None:
    """Insert-or-get the observation of a raw file (``Conflict`` if another file has its id)."""
    bucket, _, key = observation.ref.partition("/")
    missiondb.register_observation(
        db,
        from_data(
            missiondb.ObservationSpec,
            f"raw file {observation.ref}: header",
            obs_id=observation.obs_id,
            programme=programme,
            object_name=observation.object_name,
            ra=observation.ra,
            dec=observation.dec,
            burst_id=observation.burst_id,
            raw_bucket=bucket,
            raw_key=key,
            raw_sha256=observation.sha256,
        ),
    )


def claim(db: Session, run_id: str, bricks: list[str]) -> list[str]:
    """``pending → dispatched`` (attempt 1) of each brick, in the caller's transaction.

    Each is a compare-and-set of its own row, so of two orchestrators claiming the same
    brick exactly one wins it; the caller commits before dispatching, which makes the
    claims visible to every other orchestrator. Returns the bricks this caller won, in
    ``bricks`` order.
    """
    won: list[str] = []
    now = datetime.now(UTC)
    for brick in bricks:
        result = db.execute(
            sa.update(st.Task)
            .where(st.Task.task_id == st.task_id_of(run_id, brick), st.Task.state == "pending")
            .values(
                state="dispatched",
                attempts=1,
                call_id=task_call_id(run_id, brick, 1),
                started_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            won.append(brick)
    return won


def unclaim(db: Session, run_id: str, brick: str) -> bool:
    """Undo :func:`claim` (``dispatched → pending``) of a brick whose call was not queued.

    Only a first attempt this caller claimed is undone (the compare-and-set names its
    call id), so that the next delivery of the event, or the stall watchdog, claims and
    dispatches it again: no task stays ``dispatched`` with no call in flight.
    """
    return (
        db.execute(
            sa.update(st.Task)
            .where(
                st.Task.task_id == st.task_id_of(run_id, brick),
                st.Task.state == "dispatched",
                st.Task.attempts == 1,
                st.Task.call_id == task_call_id(run_id, brick, 1),
            )
            .values(state="pending", attempts=0, call_id=None, started_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


@dataclass(frozen=True)
class StalledTask:
    """A dispatched task of a running run whose current attempt started before a cutoff."""

    run_id: str
    brick: str
    attempt: int
    call_id: str | None


def stalled_tasks(db: Session, cutoff: datetime, limit: int = 500) -> list[StalledTask]:
    """Dispatched tasks of running runs whose current attempt was dispatched before ``cutoff``."""
    rows = db.execute(
        sa.select(st.Task.run_id, st.Task.brick, st.Task.attempts, st.Task.call_id)
        .join(st.Run, st.Run.run_id == st.Task.run_id)
        .where(
            st.Run.state == "running",
            st.Task.state == "dispatched",
            sa.or_(st.Task.started_at.is_(None), st.Task.started_at < cutoff),
        )
        .order_by(st.Task.id)
        .limit(limit)
    )
    return [StalledTask(r, b, a, c) for r, b, a, c in rows]


def idle_running_runs(db: Session, cutoff: datetime, limit: int = 500) -> list[str]:
    """Running runs started before ``cutoff`` with no task dispatched (none in flight)."""
    busy = sa.select(st.Task.id).where(
        st.Task.run_id == st.Run.run_id, st.Task.state.in_(("dispatched", "running"))
    )
    rows = db.scalars(
        sa.select(st.Run.run_id)
        .where(
            st.Run.state == "running",
            sa.or_(st.Run.started_at.is_(None), st.Run.started_at < cutoff),
            ~busy.exists(),
        )
        .order_by(st.Run.id)
        .limit(limit)
    )
    return list(rows)


def retry_task(db: Session, task_id: str, attempt: int, reason: str) -> bool:
    """Move a dispatched task from ``attempt`` to the next; True for the one caller that does."""
    run_id, _, brick = task_id.rpartition(".")
    return (
        db.execute(
            sa.update(st.Task)
            .where(
                st.Task.task_id == task_id,
                st.Task.state == "dispatched",
                st.Task.attempts == attempt,
            )
            .values(
                attempts=attempt + 1,
                call_id=task_call_id(run_id, brick, attempt + 1),
                error=reason,
                # the clock of the stall watchdog: the current attempt's dispatch
                started_at=datetime.now(UTC),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def finish_task(
    db: Session, task_id: str, attempt: int, state: str, error: str | None
) -> str | None:
    """Compare-and-set the end of one attempt of a dispatched task.

    Returns
    -------
    str or None
        ``state`` when this caller ended the attempt; ``"kept"`` when a successful
        attempt finished after its run was cancelled or failed (the task keeps that
        state, its products are still registered, partial); None for a repeat or a
        stale attempt.
    """
    values: dict[str, Any] = {"state": state, "finished_at": datetime.now(UTC)}
    if error is not None:
        values["error"] = error
    won = db.execute(
        sa.update(st.Task)
        .where(
            st.Task.task_id == task_id, st.Task.state == "dispatched", st.Task.attempts == attempt
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won == 1:
        return state
    if state != "succeeded":
        return None
    ended = db.scalar(
        sa.select(st.Task.id).where(
            st.Task.task_id == task_id, st.Task.state.in_(("cancelled", "skipped"))
        )
    )
    registered = db.scalar(sa.select(st.Product.id).where(st.Product.task_id == task_id).limit(1))
    return "kept" if ended is not None and registered is None else None


def foreign_outputs(run_id: str, response: dict[str, Any]) -> list[str]:
    """The outputs of a brick's answer that are not the run's own products.

    A brick writes only under ``products/<run_id>/`` (``storage.brick_adapter.output_ref``);
    an answer naming anything else (another run's notice, a raw file) is refused, so
    that no completion can make a run register, or alert with, what it did not make.
    """
    prefix = f"products/{run_id}/"
    outputs = response.get("outputs")
    if not isinstance(outputs, dict):
        return ["(outputs is not an object)"]
    return [
        f"{name}: {output.get('ref')!r}" if isinstance(output, dict) else f"{name}: not an object"
        for name, output in outputs.items()
        if not isinstance(output, dict)
        or not isinstance(output.get("ref"), str)
        or not output["ref"].startswith(prefix)
        or ".." in output["ref"].split("/")
    ]


def register_products(
    db: Session, run_id: str, task_id: str, response: dict[str, Any]
) -> list[ProductRegistered]:
    """Insert-or-get a brick's outputs with their provenance (``missiondb.register_products``).

    Returns the events of the products this call registered (none for a repeat).
    """
    run = missiondb.get_run(db, run_id)
    provenance = dict(response.get("provenance", {}))
    provenance.setdefault("brick", response.get("brick"))
    provenance.setdefault("brick_version", response.get("version"))
    provenance["config_version"] = run.config_version
    provenance["programme"] = run.programme
    specs = []
    for name, output in response.get("outputs", {}).items():
        bucket, _, key = output["ref"].partition("/")
        specs.append(
            missiondb.ProductSpec(
                run_id=run_id,
                task_id=task_id,
                name=name,
                bucket=bucket,
                key=key,
                sha256=output["sha256"],
                size=output["size"],
                content_type=output.get("content_type", "application/octet-stream"),
                provenance=missiondb.Provenance(**provenance),
            )
        )
    created = missiondb.register_products(db, specs, run)
    return [
        ProductRegistered(
            run_id=run_id,
            task=task_id.rpartition(".")[2],
            product=record.name,
            key=f"{record.bucket}/{record.key}",
            sha256=record.sha256,
            size=record.size,
        )
        for record, new in created
        if new
    ]


def outputs_of(db: Session, run_id: str) -> dict[str, str]:
    """Product name → ``bucket/key`` of everything the run has registered."""
    rows = db.execute(
        sa.select(st.Product.name, st.Product.bucket, st.Product.key).where(
            st.Product.run_id == run_id
        )
    )
    return {name: f"{bucket}/{key}" for name, bucket, key in rows}
