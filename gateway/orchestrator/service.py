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

from bricks.errors import Conflict, MxtError, NotFound, Transient, classify_status
from gateway.events import (
    Alert,
    EventPublisher,
    ProductRegistered,
    RunStateChanged,
    TaskStateChanged,
)
from gateway.messages import CallCompleted
from gateway.orchestrator import records, views
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
from gateway.orchestrator.raw import read_raw_observation
from storage import configdb, missiondb

log = logging.getLogger("mxt.orchestrator")

#: seconds between the tries of queueing one brick call that NATS refused for now
DISPATCH_RETRY_DELAYS = (0.2, 1.0)
#: attempts a stalled task may be given beyond the programme's ``retries`` (a lost
#: dispatch is not the brick's failure); then the watchdog fails it with the reason
STALL_EXTRA_ATTEMPTS = 2
#: a call ``queued`` or ``running`` whose status has not changed for this many stall
#: budgets is taken as lost by the queue (beyond any brick's timeout and redelivery)
STALL_IN_FLIGHT_FACTOR = 4

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


#: databases (URLs) this process has seeded the built-in programmes into
_SEEDED: set[str] = set()


def seed_programmes_once(again: bool = False) -> None:
    """Seed the built-in programmes on a process's first run start, not on every one.

    Seeding is idempotent, so processes starting together all seed harmlessly. With
    ``again``, seed even if this process did (its database was emptied under it).
    """
    url = st.engine().url.render_as_string(hide_password=True)
    if url in _SEEDED and not again:
        return
    with records.transaction() as db:
        seed_programmes(db)
    _SEEDED.add(url)


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


#: (programme, configuration version) of the runs this process has advanced: fixed at
#: a run's start, so every completion after the first finds its DAG without a read
_RUN_CONFIGURATIONS: dict[str, tuple[str, int | None]] = {}
#: runs remembered at most (a dict keeps insertion order: the oldest go first)
RUN_CONFIGURATIONS_KEPT = 4096


def run_dag(run_id: str) -> Dag | None:
    """The DAG a run follows; None for an unknown run."""
    configuration = _RUN_CONFIGURATIONS.get(run_id)
    with st.session() as db:
        if configuration is None:
            found = db.execute(
                sa.select(st.Run.programme, st.Run.config_version).where(st.Run.run_id == run_id)
            ).one_or_none()
            if found is None:
                return None
            configuration = (found[0], found[1])
            while len(_RUN_CONFIGURATIONS) >= RUN_CONFIGURATIONS_KEPT:
                # the stall watchdog's thread shares this cache: evict without KeyError
                _RUN_CONFIGURATIONS.pop(next(iter(_RUN_CONFIGURATIONS.copy())), None)
            _RUN_CONFIGURATIONS[run_id] = configuration
        dag, _ = load_dag(db, *configuration)
    return dag


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
        if request.run_id is not None and records.run_exists(request.run_id):
            # a repeated event-driven start: re-dispatch what is missing (a claim undone,
            # a dispatch lost), never just answer with a run that may have stalled
            await self.resume(request.run_id)
            return views.run_view(request.run_id)
        observation = read_raw_observation(self._store(), request.raw_key)
        programme = request.programme or programme_for_header(observation.program)
        seed_programmes_once()
        try:
            dag, version = self._run_configuration(programme, request)
        except NotFound:
            if request.config_version is not None:
                raise
            seed_programmes_once(again=True)  # a database emptied since this process seeded
            dag, version = self._run_configuration(programme, request)
        caldb = resolve_caldb(self._store(), dag.caldb_codenames(), observation, request)
        run_id = request.run_id or new_run_id()
        with records.transaction() as db:
            records.register_observation(db, observation, programme)
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
        except Transient:
            if request.run_id is not None:
                # an event-driven start: its claims are undone and the run stays
                # running; the event's redelivery (a repeated start resumes the run)
                # or the stall watchdog dispatches them again
                raise
            await self._end_run(
                run_id, "failed", "dispatch of the first bricks failed: NATS refused", "skipped"
            )
        except MxtError as exc:
            await self._end_run(
                run_id, "failed", f"dispatch of the first bricks failed: {exc.reason}", "skipped"
            )
        return views.run_view(run_id)

    @staticmethod
    def _run_configuration(programme: str, request: StartRun) -> tuple[Dag, int]:
        """The run's DAG and configdb version (a new inactive one holding overrides)."""
        with records.transaction() as db:
            version = records.config_version_with(
                db, programme, request.config_version, request.config
            )
            return load_dag(db, programme, version)

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

    async def resume(self, run_id: str) -> None:
        """Dispatch what a running run misses: ready tasks still pending (a claim undone)
        or dispatched (sent again under the same call id, which the queue dedupes); end
        the run when every task has ended but the run was not closed."""
        dag = run_dag(run_id)
        if dag is None:
            return
        if await self.dispatch_ready(run_id, dag, heal=True):
            await self._finish_if_done(run_id)

    async def reject_arrival(
        self, run_id: str, raw_key: str, reason: str, programme: str | None = None
    ) -> dict[str, Any]:
        """Record a refused raw arrival as a failed run with its reason (no tasks).

        An event-driven start that cannot become a run (not a FITS file, an OBS_ID
        taken by another file, a broken programme) is listed on the runs API like any
        other failed run, under the arrival's own run id (a repeated event: one run).
        The run's programme is the file's when its header said it, else ``GP``.
        """
        obs_id = None
        try:
            observation = read_raw_observation(self._store(), raw_key)
            programme = programme or programme_for_header(observation.program)
            with st.session() as db:
                missiondb.get_observation(db, observation.obs_id)
            obs_id = observation.obs_id
        except MxtError:
            pass
        reason = f"arrival of {raw_key} refused: {reason}"
        with records.transaction() as db:
            run, created = missiondb.create_run(
                db,
                missiondb.RunSpec(
                    run_id=run_id, obs_id=obs_id, programme=programme or "GP", bricks=[]
                ),
            )
            won = missiondb.transition_run(db, run_id, ["pending"], "failed", reason)
        if won:
            log.error("run failed: %s", reason, extra={"run_id": run_id})
            await self.events.publish(
                RunStateChanged(
                    run_id=run_id,
                    programme=run.programme,
                    state="failed",
                    reason=reason,
                    obs_id=obs_id,
                )
            )
        return views.run_view(run_id)

    # --------------------------------------------------------------- watchdog

    async def sweep_stalled(self, stall_seconds: float, calls: Any = None) -> dict[str, str]:
        """The stall watchdog's pass: no running run may stay without work in flight.

        Every task ``dispatched`` longer than ``stall_seconds`` ago has its call looked
        up in ``MXT_CALL_STATUS`` (``calls.call_status``): queued or running, it is in
        flight and left to the queue (its timeouts and redelivery) unless its status
        has not changed for ``STALL_IN_FLIGHT_FACTOR`` budgets; unknown (lost), or
        finished that long ago without its completion handled, the task is dispatched
        again as its next attempt, or failed with the reason once it has had
        ``retries + STALL_EXTRA_ATTEMPTS`` attempts. A run with no task in flight is
        resumed (:meth:`resume`). Every change is a compare-and-set: several replicas
        sweeping at once act once.

        Returns
        -------
        dict
            What was done, by task id or run id (for logs and tests).
        """
        import time as _time
        from datetime import timedelta

        calls = calls or self.gateway
        cutoff = datetime.now(UTC) - timedelta(seconds=stall_seconds)
        with st.session() as db:
            stalled = records.stalled_tasks(db, cutoff)
            idle = records.idle_running_runs(db, cutoff)
        done: dict[str, str] = {}
        for task in stalled:
            key = st.task_id_of(task.run_id, task.brick)
            try:
                dag = run_dag(task.run_id)
                if dag is None or task.brick not in dag.nodes:
                    continue
                call_id = task.call_id or task_call_id(task.run_id, task.brick, task.attempt)
                status = await calls.call_status(call_id)
                in_flight = status is not None and status.state in ("queued", "running")
                age = _time.time() - status.updated_at if status is not None else 0.0
                if in_flight and age < STALL_IN_FLIGHT_FACTOR * stall_seconds:
                    continue
                if status is not None and not in_flight and age < stall_seconds:
                    continue  # just finished: its completion is on its way
                if status is not None and status.state not in ("succeeded", "queued", "running"):
                    completed = CallCompleted(
                        call_id=call_id,
                        function=status.function,
                        state=status.state,
                        status_code=status.status_code,
                        attempts=status.attempts,
                        duration=status.duration or 0.0,
                        error=status.last_error
                        or f"{status.state} in MXT_CALL_STATUS, its completion never received",
                    )
                    done[key] = await self._task_failed(
                        task.run_id, task.brick, task.attempt, completed, dag
                    )
                    continue
                if status is None:
                    what = "lost (unknown to MXT_CALL_STATUS)"
                elif in_flight:
                    what = f"{status.state} without a change for {age:.0f} s (lost by the queue)"
                else:
                    what = "succeeded but its completion was never handled"
                done[key] = await self._rescue(
                    task, dag, f"no progress in {stall_seconds:g} s: call {call_id} {what}"
                )
            except MxtError as exc:
                log.warning("watchdog: task %s not rescued now: %s", key, exc.reason)
        for run_id in idle:
            try:
                await self.resume(run_id)
                done.setdefault(run_id, "resumed")
            except MxtError as exc:
                log.warning("watchdog: run %s not resumed now: %s", run_id, exc.reason)
        return done

    async def _rescue(self, task: records.StalledTask, dag: Dag, reason: str) -> str:
        """Dispatch a stalled task's next attempt, or fail it when it has had enough."""
        task_id = st.task_id_of(task.run_id, task.brick)
        if task.attempt <= dag.parameters.retries + STALL_EXTRA_ATTEMPTS:
            with records.transaction() as db:
                won = records.retry_task(db, task_id, task.attempt, reason)
            if not won:
                return "ignored"
            log.warning(
                "brick %s: %s; dispatching attempt %d",
                task.brick,
                reason,
                task.attempt + 1,
                extra={"run_id": task.run_id, "task_id": task_id},
            )
            await self._dispatch(
                records.load_context(task.run_id), dag, task.brick, task.attempt + 1
            )
            return "redispatched"
        with records.transaction() as db:
            won = records.finish_task(db, task_id, task.attempt, "failed", reason)
        if not won:
            return "ignored"
        log.error("brick %s failed: %s", task.brick, reason, extra={"run_id": task.run_id})
        await self.events.publish(
            TaskStateChanged(
                run_id=task.run_id,
                task=task.brick,
                state="failed",
                attempt=task.attempt,
                reason=reason,
            )
        )
        await self._end_run(
            task.run_id, "failed", f"brick {task.brick} failed: {reason}", "skipped"
        )
        return "failed"

    # --------------------------------------------------------------- dispatch

    async def dispatch_ready(self, run_id: str, dag: Dag, heal: bool = False) -> bool:
        """Dispatch every brick whose needed bricks all succeeded; True when all have ended.

        A task is claimed by ``pending → dispatched``; only the claimant dispatches.
        With ``heal`` (a redelivered completion), a ready task already ``dispatched`` is
        sent again with the same call id, which the gateway's queue drops as a
        duplicate: this recovers a claim whose dispatch was lost, since the completion
        that made the task ready comes back only when its handling failed.
        """
        while True:
            # the run's state, what it made and the claims in one write transaction
            with records.transaction() as db:
                context = records.read_context(db, run_id)
                if context.run.state != "running":
                    return False
                tasks = context.tasks
                available = set(context.outputs) | {RAW_PRODUCT}
                skipped, runnable = _ready_bricks(dag, tasks, available)
                pending = [b for b in runnable if tasks[b].state == "pending"]
                won = records.claim(db, run_id, pending)
            for brick in skipped:
                await self._skip(run_id, tasks[brick], dag.nodes[brick].required, available)
            claimed = [
                brick
                for brick in runnable
                if brick in won or (heal and tasks[brick].state == "dispatched")
            ]
            results = await asyncio.gather(
                *(
                    self._dispatch(context, dag, brick, max(tasks[brick].attempts, 1))
                    for brick in claimed
                ),
                return_exceptions=True,
            )
            failures = [
                (brick, exc) for brick, exc in zip(claimed, results, strict=True) if exc is not None
            ]
            if failures:
                # a claim whose call is not queued is undone: the task goes back to
                # pending, for the next delivery of the event or the stall watchdog
                with records.transaction() as db:
                    for brick, _ in failures:
                        if brick in won:
                            records.unclaim(db, run_id, brick)
                raise failures[0][1]
            if not skipped:
                return all(t.state in st.TERMINAL_TASK_STATES for t in tasks.values())

    async def _skip(
        self, run_id: str, task: Any, required: tuple[str, ...], available: set[str]
    ) -> None:
        """Skip a brick whose inputs an upstream brick did not make (it found no work)."""
        missing = sorted(set(required) - available)
        reason = f"skipped: no {', '.join(missing)} (an upstream brick found no work)"
        with records.transaction() as db:
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

    async def _dispatch(
        self, context: records.RunContext, dag: Dag, brick: str, attempt: int
    ) -> None:
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
        headers = {"X-Mxt-Run-Id": run_id, "X-Mxt-Task-Id": task_id}
        headers["X-Mxt-Priority"] = context.run.programme.lower()  # ToO: its own lane
        for delay in (*DISPATCH_RETRY_DELAYS, None):
            try:
                await self.gateway.invoke_async(node.function, body, call_id, headers)
                break
            except Transient as exc:
                if delay is None:
                    raise
                log.warning(
                    "brick %s: call %s not queued (%s); again in %.1f s",
                    brick,
                    call_id,
                    exc.reason,
                    delay,
                    extra={"run_id": run_id, "task_id": task_id},
                )
                await asyncio.sleep(delay)
        # debug only: the task event says it, and each log line costs the hop a record
        log.debug(
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
        dag = run_dag(ref.run_id)
        if dag is None or ref.task not in dag.nodes:
            return "ignored"
        if completed.state == "succeeded":
            response = _response_body(completed)
            foreign = records.foreign_outputs(ref.run_id, response)
            if foreign:
                reason = "outputs outside the run's products refused: " + "; ".join(foreign)
                return await self._task_failed(
                    ref.run_id, ref.task, ref.attempt, completed, dag, reason
                )
            first = await self._task_succeeded(
                ref.run_id, ref.task, ref.attempt, completed, response
            )
            # the completion that finds every task ended (read after its own commit) ends
            # the run; of two last completions at once, at least the later one finds it
            if await self.dispatch_ready(ref.run_id, dag, heal=not first):
                await self._finish_if_done(ref.run_id)
            return "succeeded"
        return await self._task_failed(ref.run_id, ref.task, ref.attempt, completed, dag)

    async def _task_succeeded(
        self,
        run_id: str,
        brick: str,
        attempt: int,
        completed: CallCompleted,
        response: dict[str, Any],
    ) -> bool:
        """Record a brick's success and products; False when this delivery is a repeat."""
        task_id = st.task_id_of(run_id, brick)
        registered: list[ProductRegistered] = []
        with records.transaction() as db:
            outcome = records.finish_task(db, task_id, attempt, "succeeded", None)
            if outcome is not None:
                registered = records.register_products(db, run_id, task_id, response)
        if outcome is None:
            return False
        log.info(
            "brick %s succeeded in %.2f s (%d product(s)%s)",
            brick,
            completed.duration,
            len(registered),
            ", kept as partial: the run had ended" if outcome == "kept" else "",
            extra={"run_id": run_id, "task_id": task_id},
        )
        if outcome == "succeeded":
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
        self,
        run_id: str,
        brick: str,
        attempt: int,
        completed: CallCompleted,
        dag: Dag,
        refused: str | None = None,
    ) -> str:
        """Retry a transient failure or fail the task and the run; ``refused``: a
        successful answer the orchestrator refuses (failed for good, with that reason)."""
        reason = refused or _failure_reason(completed)
        task_id = st.task_id_of(run_id, brick)
        transient = refused is None and (
            completed.status_code is None or classify_status(completed.status_code) == "transient"
        )
        if transient and attempt <= dag.parameters.retries:
            with records.transaction() as db:
                won = records.retry_task(db, task_id, attempt, reason)
            if won:
                log.warning(
                    "brick %s attempt %d failed (%s); dispatching attempt %d",
                    brick,
                    attempt,
                    reason,
                    attempt + 1,
                    extra={"run_id": run_id, "task_id": task_id},
                )
                await self._dispatch(records.load_context(run_id), dag, brick, attempt + 1)
            return "retried"
        with records.transaction() as db:
            won = records.finish_task(db, task_id, attempt, "failed", reason)
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
        with records.transaction() as db:
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
        return views.run_view(run_id)

    async def _end_run(self, run_id: str, outcome: str, reason: str, unfinished: str) -> None:
        """End the run; mark its unfinished tasks, and its products partial."""
        with records.transaction() as db:
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


def _ready_bricks(
    dag: Dag, tasks: dict[str, Any], available: set[str]
) -> tuple[list[str], list[str]]:
    """Bricks whose needed bricks all ended well: those missing an input, and the others.

    A brick is ready when it is pending or dispatched and every brick it needs
    succeeded or was skipped; of those, the ones a required product is missing from
    (an upstream brick found no work) are skipped, the others run.
    """
    finished = {b for b, t in tasks.items() if t.state in ("succeeded", "skipped")}
    ready = [
        brick
        for brick in dag.order
        if tasks[brick].state in ("pending", "dispatched")
        and set(dag.nodes[brick].needs) <= finished
    ]
    skipped = [b for b in ready if not set(dag.nodes[b].required) <= available]
    return skipped, [brick for brick in ready if brick not in skipped]


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
