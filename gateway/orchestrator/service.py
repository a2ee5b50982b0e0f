"""The orchestrator: start runs, dispatch ready bricks, advance on completions, cancel, re-run.

Stateless: each call reads and writes missiondb (``storage.missiondb``) and configdb
(``storage.configdb``) and keeps nothing in memory but its clients. Every transition
is a compare-and-set, so the same completion delivered twice, or two completions
arriving at once, leave the run as a single delivery would.

Task call ids are ``<run_id>_<brick>_<attempt>`` (``dispatch.task_call_id``): the
gateway's queue drops a repeated dispatch of the same attempt.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from bricks.errors import BadInput, Conflict, MxtError, NotFound, Transient, classify_status
from gateway.events import (
    Alert,
    EventPublisher,
    ProductRegistered,
    RunStateChanged,
    TaskStateChanged,
)
from gateway.messages import CallCompleted
from gateway.orchestrator import state as st
from gateway.orchestrator.caldb import resolve_caldb
from gateway.orchestrator.dispatch import parse_call_id, task_call_id
from gateway.orchestrator.programme import (
    RAW_PRODUCER,
    RAW_PRODUCT,
    Dag,
    build_dag,
    builtin_programme_files,
    programme_for_header,
)
from gateway.orchestrator.raw import RawObservation, read_raw_observation
from storage import configdb, missiondb

log = logging.getLogger("mxt.orchestrator")

Overrides = dict[str, dict[str, Any]]


class StartRun(BaseModel):
    """A request to process one observation.

    Parameters
    ----------
    raw_key
        The L0 file: ``raw/<obs_id>/<file>`` (bucket ``raw``), or its key in that bucket.
    programme
        ``ToO``, ``CP`` or ``GP``; from the file's ``PROGRAM`` header when omitted.
    config_version
        A configdb version of the programme; the active one when omitted.
    config
        Parameter overrides by brick (``{"lightcurve": {"bin_seconds": 20}}``): stored
        as a new, inactive configdb version that the run records.
    caldb
        CALDB overrides by codename (``{"GAIN": "caldb/data/svom/mxt/bcf/gain/f.fits"}``).
    caldb_date
        Resolve CALDB files valid at this date (``YYYY-MM-DD``) instead of the observation's.
    """

    model_config = ConfigDict(extra="forbid")

    raw_key: str = Field(min_length=1, max_length=1024)
    programme: str | None = Field(default=None, pattern=r"^(ToO|CP|GP)$")
    config_version: int | None = Field(default=None, ge=1)
    config: Overrides = Field(default_factory=dict)
    caldb: dict[str, str] = Field(default_factory=dict)
    caldb_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    parent_run_id: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(
        default=None,
        pattern=r"^r-[a-z0-9-]{1,100}$",
        description="given by event-driven starts so that a repeated event starts one run",
    )


class RerunRequest(BaseModel):
    """A re-run of a run's observation with another configuration or CALDB; a new run id."""

    model_config = ConfigDict(extra="forbid")

    config_version: int | None = Field(default=None, ge=1)
    config: Overrides = Field(default_factory=dict)
    caldb: dict[str, str] = Field(default_factory=dict)
    caldb_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class Dispatcher(Protocol):
    """Queues a durable async call (``dispatch.QueueDispatcher``, ``dispatch.GatewayClient``)."""

    async def invoke_async(
        self, function: str, body: dict[str, Any], call_id: str, headers: dict[str, str]
    ) -> None: ...


def new_run_id() -> str:
    """A fresh run id: ``r-<UTC time>-<random>``, sortable by start time."""
    return f"r-{datetime.now(UTC):%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def seed_programmes(db: Session) -> None:
    """Seed configdb from the repository's programme YAML files (idempotent)."""
    specs = configdb.load_yaml_specs(builtin_programme_files())
    for spec in specs:
        build_dag(spec)  # a programme whose edges miss a product fails here
    configdb.seed(db, specs)


#: resolved DAGs by (programme, version): configdb versions are immutable, so a DAG once
#: built never changes, and every completion of a run needs its DAG again
_DAGS: dict[tuple[str, int], Dag] = {}


def load_dag(db: Session, programme: str, version: int | None) -> tuple[Dag, int]:
    """The resolved DAG of a programme version (the active one by default)."""
    if version is not None and (programme, version) in _DAGS:
        return _DAGS[programme, version], version
    record = configdb.get_config(db, programme, version)
    spec = configdb.ConfigSpec(
        programme=record.programme, dag=record.dag, parameters=record.parameters
    )
    dag = _DAGS[programme, record.version] = build_dag(spec)
    return dag, record.version


@dataclass
class Orchestrator:
    """The orchestrator of one process: its clients, nothing per run.

    Parameters
    ----------
    gateway
        What queues brick calls: ``QueueDispatcher`` (straight on ``MXT_ASYNC``) or
        ``GatewayClient`` (``POST /async-function/…``); both dedupe on the call id.
    events
        Publisher of run events.
    store
        The object store (``storage.objects.get_store()`` when ``None``).
    """

    gateway: Dispatcher
    events: EventPublisher
    store: Any = None

    def _store(self) -> Any:
        if self.store is None:
            from storage.objects import get_store

            self.store = get_store()
        return self.store

    # ------------------------------------------------------------------ start

    async def start_run(self, request: StartRun) -> dict[str, Any]:
        """Register the observation, create the run, resolve its CALDB, dispatch its roots.

        Raises
        ------
        BadInput
            Unreadable raw file, unknown programme or version, invalid overrides.
        """
        if request.run_id is not None and _run_exists(request.run_id):
            return run_view(request.run_id)
        observation = read_raw_observation(self._store(), request.raw_key)
        programme = request.programme or programme_for_header(observation.program)
        with _transaction() as db:
            seed_programmes(db)
            version = _config_version(db, programme, request.config_version, request.config)
            dag, version = load_dag(db, programme, version)
        caldb = resolve_caldb(self._store(), dag.caldb_codenames(), observation, request)
        run_id = request.run_id or new_run_id()
        with _transaction() as db:
            _register_observation(db, observation, programme)
            missiondb.create_run(
                db,
                missiondb.RunSpec(
                    run_id=run_id,
                    obs_id=observation.obs_id,
                    programme=programme,
                    config_version=version,
                    caldb_date=_date(request.caldb_date),
                    parent_run_id=request.parent_run_id,
                    bricks=list(dag.order),
                ),
            )
            for codename, ref in caldb.items():
                bucket, _, key = ref["ref"].partition("/")
                db.add(
                    st.RunCaldbFile(
                        run_id=run_id,
                        codename=codename,
                        bucket=bucket,
                        key=key,
                        sha256=ref["sha256"],
                    )
                )
            missiondb.transition_run(db, run_id, ["pending"], "running")
        log.info(
            "run of %s by %s (configuration version %d) started",
            observation.obs_id,
            programme,
            version,
            extra={"run_id": run_id},
        )
        await self.events.publish(
            RunStateChanged(
                run_id=run_id, programme=programme, state="running", obs_id=observation.obs_id
            )
        )
        try:
            await self.dispatch_ready(run_id, dag)
        except MxtError as exc:
            await self._end_run(
                run_id, "failed", f"dispatch of the first bricks failed: {exc.reason}", "skipped"
            )
        return run_view(run_id)

    async def rerun(self, run_id: str, request: RerunRequest) -> dict[str, Any]:
        """A new run of the same observation; the earlier run and its products are kept."""
        with st.session() as db:
            old = missiondb.get_run(db, run_id)
            observation = missiondb.get_observation(db, old.obs_id or "")
        return await self.start_run(
            StartRun(
                raw_key=f"{observation.raw_bucket}/{observation.raw_key}",
                programme=old.programme,
                config_version=request.config_version or old.config_version,
                config=request.config,
                caldb=request.caldb,
                caldb_date=request.caldb_date,
                parent_run_id=run_id,
            )
        )

    # --------------------------------------------------------------- dispatch

    async def dispatch_ready(self, run_id: str, dag: Dag, heal: bool = False) -> None:
        """Dispatch every brick whose needed bricks all succeeded.

        A task is claimed by ``pending → dispatched``; only the claimant dispatches.
        With ``heal`` (a redelivered completion), a ready task already ``dispatched`` is
        sent again with the same call id, which the gateway's queue drops as a
        duplicate: this recovers a claim whose dispatch was lost, since the completion
        that made the task ready comes back only when its handling failed.
        """
        while True:
            context = _load_context(run_id)
            if context.run.state != "running":
                return
            tasks = context.tasks
            available = set(context.outputs) | {RAW_PRODUCT}
            finished = {b for b, t in tasks.items() if t.state in ("succeeded", "skipped")}
            ready = [
                brick
                for brick in dag.order
                if tasks[brick].state in ("pending", "dispatched")
                and set(dag.nodes[brick].needs) <= finished
            ]
            skipped = [b for b in ready if not set(dag.nodes[b].required) <= available]
            for brick in skipped:
                await self._skip(run_id, tasks[brick], dag.nodes[brick].required, available)
            claimed = [
                brick
                for brick in ready
                if brick not in skipped
                and (
                    (heal and tasks[brick].state == "dispatched")
                    or (
                        tasks[brick].state == "pending"
                        and _claim(tasks[brick].task_id, run_id, brick)
                    )
                )
            ]
            await asyncio.gather(
                *(
                    self._dispatch(context, dag, brick, max(tasks[brick].attempts, 1))
                    for brick in claimed
                )
            )
            if not skipped:
                return

    async def _skip(
        self, run_id: str, task: Any, required: tuple[str, ...], available: set[str]
    ) -> None:
        """Skip a brick whose inputs an upstream brick did not make (it found no work)."""
        missing = sorted(set(required) - available)
        reason = f"skipped: no {', '.join(missing)} (an upstream brick found no work)"
        with _transaction() as db:
            won = missiondb.transition_task(
                db, task.task_id, ["pending", "dispatched"], "skipped", error=reason
            )
        if won:
            log.info(
                "brick %s %s", task.brick, reason, extra={"run_id": run_id, "task_id": task.task_id}
            )
            await self.events.publish(
                TaskStateChanged(
                    run_id=run_id,
                    task=task.brick,
                    state="skipped",
                    attempt=task.attempts,
                    reason=reason,
                )
            )

    async def _dispatch(self, context: RunContext, dag: Dag, brick: str, attempt: int) -> None:
        node = dag.nodes[brick]
        run_id = context.run.run_id
        inputs = {}
        for product, producer in node.inputs.items():
            ref = context.raw if producer == RAW_PRODUCER else context.outputs.get(product)
            if ref is not None:
                inputs[product] = ref
        task_id = st.task_id_of(run_id, brick)
        body = {
            "run_id": run_id,
            "task_id": task_id,
            "inputs": inputs,
            "config": node.params,
            "config_version": context.run.config_version,
            "caldb": {c: context.caldb[c] for c in node.caldb if c in context.caldb},
        }
        call_id = task_call_id(run_id, brick, attempt)
        await self.gateway.invoke_async(
            node.function, body, call_id, {"X-Mxt-Run-Id": run_id, "X-Mxt-Task-Id": task_id}
        )
        log.info(
            "brick %s dispatched as call %s",
            brick,
            call_id,
            extra={"run_id": run_id, "task_id": task_id},
        )
        await self.events.publish(
            TaskStateChanged(run_id=run_id, task=brick, state="dispatched", attempt=attempt)
        )

    # ---------------------------------------------------------------- advance

    async def handle_completion(self, completed: CallCompleted) -> str:
        """Advance the run a finished brick call belongs to.

        Returns
        -------
        str
            What happened: ``ignored``, ``succeeded``, ``retried`` or ``failed``.
        """
        ref = parse_call_id(completed.call_id)
        if ref is None:
            return "ignored"
        with st.session() as db:
            run = db.scalar(sa.select(st.Run).where(st.Run.run_id == ref.run_id))
            if run is None:
                return "ignored"
            dag, _ = load_dag(db, run.programme, run.config_version)
        if ref.task not in dag.nodes:
            return "ignored"
        if completed.state == "succeeded":
            first = await self._task_succeeded(ref.run_id, ref.task, ref.attempt, completed)
            await self.dispatch_ready(ref.run_id, dag, heal=not first)
            await self._finish_if_done(ref.run_id)
            return "succeeded"
        return await self._task_failed(ref.run_id, ref.task, ref.attempt, completed, dag)

    async def _task_succeeded(
        self, run_id: str, brick: str, attempt: int, completed: CallCompleted
    ) -> bool:
        """Record a brick's success and products; False when this delivery is a repeat."""
        response = _response_body(completed)
        task_id = st.task_id_of(run_id, brick)
        registered: list[ProductRegistered] = []
        with _transaction() as db:
            won = _finish_task(db, task_id, attempt, "succeeded", None)
            if won:
                registered = _register_products(db, run_id, task_id, response)
        if not won:
            return False
        log.info(
            "brick %s succeeded in %.2f s (%d product(s))",
            brick,
            completed.duration,
            len(registered),
            extra={"run_id": run_id, "task_id": task_id},
        )
        await self.events.publish(
            TaskStateChanged(
                run_id=run_id,
                task=brick,
                state="succeeded",
                attempt=attempt,
                duration=completed.duration,
            )
        )
        await self.events.publish_many(registered)
        notice = next((p for p in registered if p.product == "notice_json"), None)
        if notice is not None:
            await self._publish_notice(run_id, brick, notice, registered)
        return True

    async def _publish_notice(
        self,
        run_id: str,
        brick: str,
        notice: ProductRegistered,
        registered: list[ProductRegistered],
    ) -> None:
        bucket, _, key = notice.key.partition("/")
        voevent = next((p.key for p in registered if p.product == "notice_voevent"), None)
        try:
            body = orjson.loads(self._store().get(bucket, key))
        except (MxtError, orjson.JSONDecodeError) as exc:
            # the product is registered; only the alert is lost, and the log says so
            log.error("notice %s not published: %s", notice.key, exc, extra={"run_id": run_id})
            return
        await self.events.publish_alert(
            Alert(
                run_id=run_id, alert_type="position", task=brick, notice=body, voevent_key=voevent
            )
        )

    async def _task_failed(
        self, run_id: str, brick: str, attempt: int, completed: CallCompleted, dag: Dag
    ) -> str:
        reason = _failure_reason(completed)
        task_id = st.task_id_of(run_id, brick)
        transient = (
            completed.status_code is None or classify_status(completed.status_code) == "transient"
        )
        if transient and attempt <= dag.parameters.retries:
            with _transaction() as db:
                won = _retry_task(db, task_id, attempt, reason)
            if won:
                log.warning(
                    "brick %s attempt %d failed (%s); dispatching attempt %d",
                    brick,
                    attempt,
                    reason,
                    attempt + 1,
                    extra={"run_id": run_id, "task_id": task_id},
                )
                await self._dispatch(_load_context(run_id), dag, brick, attempt + 1)
            return "retried"
        with _transaction() as db:
            won = _finish_task(db, task_id, attempt, "failed", reason)
        if not won:
            return "ignored"
        log.error(
            "brick %s failed for good: %s",
            brick,
            reason,
            extra={"run_id": run_id, "task_id": task_id},
        )
        await self.events.publish(
            TaskStateChanged(
                run_id=run_id, task=brick, state="failed", attempt=attempt, reason=reason
            )
        )
        await self._end_run(run_id, "failed", f"brick {brick} failed: {reason}", "skipped")
        return "failed"

    # ----------------------------------------------------------- run endings

    async def _finish_if_done(self, run_id: str) -> None:
        with _transaction() as db:
            states = {t.state for t in missiondb.run_tasks(db, run_id)}
            if not states <= set(st.TERMINAL_TASK_STATES):
                return
            outcome = "succeeded" if states <= {"succeeded", "skipped"} else "failed"
            won = missiondb.transition_run(
                db,
                run_id,
                ["running"],
                outcome,
                None if outcome == "succeeded" else "bricks failed",
            )
            run = missiondb.get_run(db, run_id)
        if won:
            log.info("run %s", outcome, extra={"run_id": run_id})
            await self.events.publish(
                RunStateChanged(
                    run_id=run_id, programme=run.programme, state=outcome, obs_id=run.obs_id
                )
            )

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a running run: nothing more is dispatched; calls in flight finish.

        Raises
        ------
        Conflict
            The run has already ended.
        """
        with st.session() as db:
            run = missiondb.get_run(db, run_id)
        if run.state not in ("pending", "running"):
            raise Conflict(f"run {run_id} is already {run.state}; only a running run is cancelled")
        await self._end_run(run_id, "cancelled", "cancelled by the operator", "cancelled")
        return run_view(run_id)

    async def _end_run(self, run_id: str, outcome: str, reason: str, unfinished: str) -> None:
        """End the run; mark its unfinished tasks, and its products partial."""
        with _transaction() as db:
            if not missiondb.transition_run(db, run_id, ["pending", "running"], outcome, reason):
                return
            left = [t for t in missiondb.run_tasks(db, run_id) if t.state in st.OPEN_TASK_STATES]
            for task in left:
                missiondb.transition_task(db, task.task_id, st.OPEN_TASK_STATES, unfinished)
            missiondb.mark_products_partial(db, run_id)
            run = missiondb.get_run(db, run_id)
        log.warning("run %s: %s", outcome, reason, extra={"run_id": run_id})
        for task in left:
            await self.events.publish(
                TaskStateChanged(
                    run_id=run_id, task=task.brick, state=unfinished, attempt=task.attempts
                )
            )
        await self.events.publish(
            RunStateChanged(
                run_id=run_id,
                programme=run.programme,
                state=outcome,
                reason=reason,
                obs_id=run.obs_id,
            )
        )


# ---------------------------------------------------------------------- queries


def run_view(run_id: str) -> dict[str, Any]:
    """A run with its tasks (states, attempts, durations), outputs and CALDB files."""
    with st.session() as db:
        run = missiondb.get_run(db, run_id)
        tasks = missiondb.run_tasks(db, run_id)
        caldb = db.scalars(sa.select(st.RunCaldbFile).where(st.RunCaldbFile.run_id == run_id))
        products = db.scalars(sa.select(st.Product).where(st.Product.run_id == run_id))
        by_task: dict[str, list[str]] = {}
        for product in products:
            by_task.setdefault(product.task_id or "", []).append(product.name)
        needs = _needs(db, run.programme, run.config_version)
        caldb_files = {
            f.codename: {"ref": f"{f.bucket}/{f.key}", "sha256": f.sha256} for f in caldb
        }
    view = run.model_dump(mode="json")
    view["caldb_files"] = caldb_files
    view["tasks"] = [
        {
            **task.model_dump(mode="json"),
            "needs": needs.get(task.brick, []),
            "products": by_task.get(task.task_id, []),
            "seconds": _seconds(task.started_at, task.finished_at),
        }
        for task in tasks
    ]
    return view


def list_runs(filters: dict[str, Any], limit: int = 50, after: int | None = None) -> dict[str, Any]:
    """Runs, newest first, filtered by ``run_id``, ``obs_id``, ``programme`` or ``state``."""
    request = missiondb.QueryRequest(
        entity="runs", filters=filters, limit=limit, after=after, descending=True
    )
    with st.session() as db:
        return missiondb.query(db, request).model_dump(mode="json")


def list_products(run_id: str) -> list[dict[str, Any]]:
    """The products a run registered, with their provenance, in registration order."""
    with st.session() as db:
        missiondb.get_run(db, run_id)
        page = missiondb.query(
            db, missiondb.QueryRequest(entity="products", filters={"run_id": run_id}, limit=1000)
        )
    return page.items


# ---------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class RunContext:
    """What dispatching needs of a run, read in one session."""

    run: missiondb.RunRecord
    tasks: dict[str, missiondb.TaskRecord]
    outputs: dict[str, str]
    caldb: dict[str, str]
    raw: str


def _load_context(run_id: str) -> RunContext:
    with st.session() as db:
        caldb = db.scalars(sa.select(st.RunCaldbFile).where(st.RunCaldbFile.run_id == run_id))
        return RunContext(
            run=missiondb.get_run(db, run_id),
            tasks={t.brick: t for t in missiondb.run_tasks(db, run_id)},
            outputs=_outputs(db, run_id),
            caldb={f.codename: f"{f.bucket}/{f.key}" for f in caldb},
            raw=_raw_ref(db, run_id),
        )


def _run_exists(run_id: str) -> bool:
    with st.session() as db:
        return db.scalar(sa.select(st.Run.id).where(st.Run.run_id == run_id)) is not None


def _transaction() -> Any:
    from storage.db.engine import transaction

    return transaction(st.engine())


def _config_version(
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


def _register_observation(db: Session, observation: RawObservation, programme: str) -> None:
    bucket, _, key = observation.ref.partition("/")
    missiondb.register_observation(
        db,
        missiondb.ObservationSpec(
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


def _claim(task_id: str, run_id: str, brick: str) -> bool:
    with _transaction() as db:
        return (
            db.execute(
                sa.update(st.Task)
                .where(st.Task.task_id == task_id, st.Task.state == "pending")
                .values(
                    state="dispatched",
                    attempts=1,
                    call_id=task_call_id(run_id, brick, 1),
                    started_at=datetime.now(UTC),
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )


def _retry_task(db: Session, task_id: str, attempt: int, reason: str) -> bool:
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
                attempts=attempt + 1, call_id=task_call_id(run_id, brick, attempt + 1), error=reason
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def _finish_task(db: Session, task_id: str, attempt: int, state: str, error: str | None) -> bool:
    """Compare-and-set the end of one attempt; a task of a cancelled run stays cancelled."""
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
    if won == 1 or state != "succeeded":
        return won == 1
    # the run was cancelled or failed while this attempt ran: keep what it made, partial
    return db.scalar(
        sa.select(sa.func.count())
        .select_from(st.Task)
        .where(st.Task.task_id == task_id, st.Task.state.in_(("cancelled", "skipped")))
    ) == 1 and not db.scalar(sa.select(st.Product.id).where(st.Product.task_id == task_id).limit(1))


def _register_products(
    db: Session, run_id: str, task_id: str, response: dict[str, Any]
) -> list[ProductRegistered]:
    """Insert-or-get a brick's outputs with their provenance, in one round trip.

    ``missiondb.register_product``'s rules, for a whole brick at once: the same name
    with the same object is a repeat; with another object it is a ``Conflict``. A
    product arriving after its run ended is kept, and marked partial.
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
    existing = {
        row.name: row
        for row in db.scalars(
            sa.select(st.Product).where(
                st.Product.run_id == run_id, st.Product.name.in_([p.name for p in specs])
            )
        )
    }
    events, now = [], datetime.now(UTC)
    for spec in specs:
        row = existing.get(spec.name)
        if row is not None:
            if (row.key, row.sha256) != (spec.key, spec.sha256):
                raise Conflict(f"product {spec.name} of run {run_id} exists with another object")
            continue
        values = spec.model_dump(mode="json")
        db.add(st.Product(**values, partial=run.state != "running", created_at=now))
        events.append(
            ProductRegistered(
                run_id=run_id,
                task=task_id.rpartition(".")[2],
                product=spec.name,
                key=f"{spec.bucket}/{spec.key}",
                sha256=spec.sha256,
                size=spec.size,
            )
        )
    db.flush()
    return events


def _outputs(db: Session, run_id: str) -> dict[str, str]:
    """Product name → ``bucket/key`` of everything the run has registered."""
    rows = db.execute(
        sa.select(st.Product.name, st.Product.bucket, st.Product.key).where(
            st.Product.run_id == run_id
        )
    )
    return {name: f"{bucket}/{key}" for name, bucket, key in rows}


def _raw_ref(db: Session, run_id: str) -> str:
    row = db.execute(
        sa.select(st.Observation.raw_bucket, st.Observation.raw_key)
        .join(st.Run, st.Run.obs_id == st.Observation.obs_id)
        .where(st.Run.run_id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"run {run_id} has no observation")
    return f"{row[0]}/{row[1]}"


def _needs(db: Session, programme: str, version: int | None) -> dict[str, list[str]]:
    try:
        record = configdb.get_config(db, programme, version)
    except NotFound:
        return {}
    return {node["brick"]: list(node.get("needs", [])) for node in record.dag}


def _response_body(completed: CallCompleted) -> dict[str, Any]:
    if completed.body_truncated or not completed.body_b64:
        raise Transient(f"call {completed.call_id} completed without its response body")
    return orjson.loads(base64.b64decode(completed.body_b64))


def _failure_reason(completed: CallCompleted) -> str:
    reason = completed.error or ""
    if completed.body_b64:
        raw = base64.b64decode(completed.body_b64)
        try:
            body = orjson.loads(raw)
            reason = (
                (body.get("reason") or body.get("detail") or reason)
                if isinstance(body, dict)
                else reason
            )
        except orjson.JSONDecodeError:
            reason = raw[:300].decode(errors="replace")
    status = f"HTTP {completed.status_code}" if completed.status_code else "no response"
    tries = f"{completed.state} after {completed.attempts} attempt(s)"
    return f"{reason or 'no reason given'} ({status}, {tries})"


def _date(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None
