"""What the orchestrator's functions do with a request: one place for every handler.

Each ``functions/orchestrator*/handler.py`` is a few lines over these functions; the
gateway's resource routes (``com.mxt.routes``) deliver path parameters, query
parameters and the JSON body merged into one request model.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from functools import cache
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response, StreamingResponse

from bricks.errors import BadInput, MxtError, Transient
from gateway.events import EventPublisher
from gateway.messages import CallCompleted
from gateway.orchestrator import service, views
from gateway.orchestrator.dispatch import GatewayClient, QueueDispatcher
from gateway.orchestrator.raw import RAW_BUCKET
from storage.schemas import Identifier

RUN_ID = r"^r-[a-z0-9-]{1,100}$"
#: seconds between two looks at the log index while following a run
FOLLOW_POLL_SECONDS = 0.25


@cache
def orchestrator() -> service.Orchestrator:
    """The process's orchestrator, with clients built from the settings once."""
    return build_orchestrator()


def build_orchestrator() -> service.Orchestrator:
    """An orchestrator with clients of its own, built from the settings."""
    from gateway.auth import platform_headers, read_platform_token
    from storage.settings import get_settings

    settings = get_settings()
    nats_url = settings.nats_url or "nats://127.0.0.1:4222"
    if os.environ.get("MXT_ORCHESTRATOR_DISPATCH", "queue") == "gateway":
        token = read_platform_token(settings.resolved_secrets_dir)
        dispatcher: Any = GatewayClient(settings.gateway_url, platform_headers(token))
    else:
        dispatcher = QueueDispatcher(nats_url)
    return service.Orchestrator(gateway=dispatcher, events=EventPublisher(nats_url))


def warm_up(watchdog: bool = True) -> None:
    """Import at process start what the first run would wait for (the bricks' declarations,
    the database layer), so that the first completion is handled as fast as the others;
    and start this process's stall watchdog (:func:`start_watchdog`)."""
    from bricks.registry import all_bricks

    all_bricks()
    orchestrator()
    if watchdog:
        start_watchdog()


#: default of ``MXT_TASK_STALL_SECONDS``: longer than any brick's ``exec_timeout``
TASK_STALL_SECONDS = 300.0
_WATCHDOG: list[threading.Thread] = []


def stall_seconds() -> float:
    """``MXT_TASK_STALL_SECONDS``: how long a dispatched task may show no progress."""
    raw = os.environ.get("MXT_TASK_STALL_SECONDS", "")
    try:
        value = float(raw) if raw else TASK_STALL_SECONDS
    except ValueError:
        raise ValueError(f"MXT_TASK_STALL_SECONDS={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"MXT_TASK_STALL_SECONDS={raw!r} must be positive")
    return value


def start_watchdog() -> threading.Thread | None:
    """Start the stall watchdog of this process (once): a daemon thread sweeping
    (``Orchestrator.sweep_stalled``) every quarter of ``MXT_TASK_STALL_SECONDS`` (at
    most every minute), with its own event loop and NATS connections.

    Every process that warms the orchestrator up (``orchestrator``,
    ``orchestrator-advance``, ``orchestrator-raw-arrived``: ``scale.min`` 1) runs
    one; their sweeps are idempotent compare-and-sets. Only a function process
    (``python -m gateway.runtime``) starts one; ``MXT_TASK_WATCHDOG=off`` disables it.
    """
    if os.environ.get("MXT_TASK_WATCHDOG", "on").lower() in ("off", "0", "false", "no"):
        return None
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main, "name", "") != "gateway.runtime.__main__":
        return None  # only a function process sweeps, never a test or a script importing us
    if _WATCHDOG and _WATCHDOG[0].is_alive():
        return _WATCHDOG[0]
    stall = stall_seconds()
    thread = threading.Thread(
        target=lambda: asyncio.run(_watch(stall)), name="mxt-stall-watchdog", daemon=True
    )
    _WATCHDOG[:] = [thread]
    thread.start()
    return thread


async def _watch(stall: float) -> None:
    import logging

    from storage.settings import get_settings

    log = logging.getLogger("mxt.orchestrator.watchdog")
    period = min(max(stall / 4, 0.5), 60.0)
    mine = build_orchestrator()  # the thread's own loop: its own clients
    calls = QueueDispatcher(get_settings().nats_url or "nats://127.0.0.1:4222")
    while True:
        await asyncio.sleep(period)
        try:
            done = await mine.sweep_stalled(stall, calls)
            if done:
                log.warning("stall watchdog: %s", done)
        except Exception:  # the watchdog outlives any one failed pass
            log.exception("stall watchdog pass failed")


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson (datetimes as ISO 8601)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


# ------------------------------------------------------------------ runs


async def start_run(request: service.StartRun) -> Response:
    """``POST /mxt/runs``: start a run; 201 with the run and its tasks."""
    return json_response(await orchestrator().start_run(request), 201)


class ProgrammeStart(BaseModel):
    """``POST /mxt_<programme>_pipeline/runs``: a run of that programme."""

    model_config = ConfigDict(extra="forbid")

    raw_key: str = Field(min_length=1, max_length=1024)
    config_version: int | None = Field(default=None, ge=1)
    config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    caldb: dict[str, str] = Field(default_factory=dict)
    caldb_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


async def start_programme_run(request: ProgrammeStart, programme: str) -> Response:
    """A programme entry point: the programme is the entry's, not the file's header."""
    start = service.StartRun(programme=programme, **request.model_dump())
    return json_response(await orchestrator().start_run(start), 201)


class RunQuery(BaseModel):
    """``GET /mxt/runs[/{run_id}[/{view}]]``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, pattern=RUN_ID)
    view: Literal["products", "tasks"] | None = None
    # the identifier rule missiondb filters with: a bad obs_id is a 422 here, not a 500 there
    obs_id: Identifier | None = None
    programme: Literal["ToO", "CP", "GP"] | None = None
    state: Literal["pending", "running", "succeeded", "failed", "cancelled"] | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    after: int | None = Field(default=None, ge=0)


def query_runs(request: RunQuery) -> Response:
    """A page of runs, one run with its DAG, or a run's products."""
    if request.run_id is None:
        if request.view is not None:
            raise BadInput("view needs a run_id")
        filters = request.model_dump(include={"obs_id", "programme", "state"}, exclude_none=True)
        return json_response(views.list_runs(filters, request.limit, request.after))
    if request.view == "products":
        return json_response(
            {"run_id": request.run_id, "items": views.list_products(request.run_id)}
        )
    return json_response(views.run_view(request.run_id))


class RunControl(BaseModel):
    """``POST /mxt/runs/{run_id}/{action}``: cancel, or re-run with other settings."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=RUN_ID)
    action: Literal["cancel", "rerun"]
    config_version: int | None = Field(default=None, ge=1)
    config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    caldb: dict[str, str] = Field(default_factory=dict)
    caldb_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


async def control_run(request: RunControl) -> Response:
    """Cancel (200) or re-run (201, the new run) a run."""
    if request.action == "cancel":
        if request.config or request.caldb or request.config_version or request.caldb_date:
            raise BadInput("cancel takes no config, caldb, config_version or caldb_date")
        return json_response(await orchestrator().cancel(request.run_id))
    rerun = service.RerunRequest(
        **request.model_dump(include={"config_version", "config", "caldb", "caldb_date"})
    )
    return json_response(await orchestrator().rerun(request.run_id, rerun), 201)


# ------------------------------------------------------------------ logs


class LogQuery(BaseModel):
    """``GET /mxt/runs/{run_id}/logs``: lines of a run, filtered; ``follow`` streams (SSE)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(pattern=RUN_ID)
    task: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    function: str | None = Field(default=None, max_length=128)
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = None
    after: int | None = Field(default=None, ge=0)
    limit: int = Field(default=1000, ge=1, le=1000)
    follow: bool = False


def _log_page(request: LogQuery, after: int | None) -> dict[str, Any]:
    from storage import missiondb
    from storage.db.engine import transaction

    filters: dict[str, Any] = {"run_id": request.run_id}
    if request.task:
        filters["task_id"] = f"{request.run_id}.{request.task}"
    if request.function:
        filters["function"] = request.function
    if request.level:
        filters["level"] = request.level
    query = missiondb.QueryRequest(entity="logs", filters=filters, limit=request.limit, after=after)
    with transaction(read_only=True) as db:
        return missiondb.query(db, query).model_dump(mode="json")


def run_logs(request: LogQuery) -> Response:
    """Log lines of a run: one JSON page, or a server-sent event stream with ``follow``."""
    views.run_view(request.run_id)  # 404 for an unknown run
    if not request.follow:
        return json_response(_log_page(request, request.after))
    return StreamingResponse(
        _follow(request), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _follow(request: LogQuery) -> AsyncIterator[bytes]:
    """Every line as an SSE ``log`` event, until the run has ended and all is sent."""
    after = request.after
    while True:
        ended = views.run_view(request.run_id)["state"] not in ("pending", "running")
        while True:
            page = await asyncio.to_thread(_log_page, request, after)
            for item in page["items"]:
                after = item["id"]
                yield b"id: %d\nevent: log\ndata: %s\n\n" % (item["id"], orjson.dumps(item))
            if page["next_after"] is None:
                break
        if ended:
            state = views.run_view(request.run_id)["state"]
            yield b"event: end\ndata: %s\n\n" % orjson.dumps({"state": state})
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


# ------------------------------------------------------------------ topics


async def advance(completed: CallCompleted, log: Any = None) -> dict[str, str]:
    """A brick call finished (``mxt.calls.completed.brick-*``): advance its run."""
    outcome = await orchestrator().handle_completion(completed)
    return {"call_id": completed.call_id, "outcome": outcome}


async def raw_arrived(event: dict[str, Any]) -> Response:
    """An object landed in the raw bucket (``mxt.storage.raw``): start its run.

    The event has MinIO's shape; each record naming a FITS file in ``raw`` starts a
    run whose programme the file's ``PROGRAM`` header gives. Other objects are ignored.
    """
    from urllib.parse import unquote

    records = event.get("Records")
    if not isinstance(records, list):
        raise BadInput("event has no Records list (expected MinIO's object-created shape)")
    started = []
    refused = []
    for record in records:
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            raise BadInput("event record lacks s3.bucket.name or s3.object.key") from None
        if bucket != RAW_BUCKET:
            continue
        run_id = arrival_run_id(record)
        raw_key = f"{bucket}/{key}"
        if not key.lower().endswith((".fits", ".fit", ".fits.gz")):
            # every object landing in raw is an arrival: a refused one is a failed run
            await orchestrator().reject_arrival(
                run_id, raw_key, "not a FITS file (its name ends neither .fits, .fit nor .fits.gz)"
            )
            refused.append(run_id)
            continue
        try:
            run = await orchestrator().start_run(service.StartRun(raw_key=raw_key, run_id=run_id))
        except Transient:
            raise  # retried by the queue; a repeated start resumes what it began
        except MxtError as exc:
            # not FITS, an OBS_ID taken by another file, a broken programme: a failed
            # run with the reason on the runs API, not only a status in a KV bucket
            await orchestrator().reject_arrival(run_id, raw_key, exc.reason)
            refused.append(run_id)
            continue
        started.append(run["run_id"])
    return JSONResponse({"started": started, "refused": refused})


def arrival_run_id(record: dict[str, Any]) -> str:
    """The run id an object-created record starts: the same record always gives the same id."""
    import hashlib
    from datetime import datetime

    try:
        when = datetime.fromisoformat(str(record.get("eventTime", "")).replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"event record's eventTime {record.get('eventTime')!r} is not ISO 8601"
        ) from None
    obj = record["s3"]["object"]
    identity = f"{record['s3']['bucket']['name']}/{obj['key']}@{obj.get('eTag', '')}"
    return f"r-{when:%Y%m%dt%H%M%S}-{hashlib.sha256(identity.encode()).hexdigest()[:6]}"


def parse_event(body: bytes) -> dict[str, Any]:
    """The JSON object of a NATS message body; ``BadInput`` when it is not one."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"event body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadInput("event body is not a JSON object")
    return event
