"""The log sink: every structured line a function prints about a run is indexed and published.

The local provider hands each JSON log line of a function to :func:`handle_record`
(in the gateway's event loop). Lines that belong to a run (they carry ``run_id``, or
a task call id ``<run>_<task>_<attempt>``) are queued here and a background thread
writes them to missiondb's log index in batches and publishes them on
``mxt.events.log.<run_id>``; the gateway's loop never waits on a database or on NATS.
Lines without a run stay in the function's own log (``/system/logs``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from gateway.events import EventPublisher, LogLine
from gateway.orchestrator.dispatch import parse_call_id

log = logging.getLogger("mxt.logsink")

#: lines written per transaction, and the longest wait before a partial batch is written (s)
BATCH_LINES = 500
BATCH_SECONDS = 0.2
#: lines waiting beyond this are dropped (counted) rather than growing memory without bound
QUEUE_LINES = 100_000
#: the longest message kept, in characters (a traceback stays readable, a dump does not)
MESSAGE_CHARS = 8000


LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING",
          "error": "ERROR", "critical": "CRITICAL", "fatal": "CRITICAL"}  # fmt: skip


def run_fields(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The run and task id a log record belongs to, from its fields or its call id."""
    run_id, task_id = record.get("run_id"), record.get("task_id")
    if run_id:
        return str(run_id), (str(task_id) if task_id else None)
    ref = parse_call_id(record.get("call_id"))
    if ref is not None:
        return ref.run_id, f"{ref.run_id}.{ref.task}"
    return None, None


class LogSink:
    """A queue of run log lines drained by one daemon thread into the DB and NATS.

    Parameters
    ----------
    database_url
        missiondb (``MXT_DATABASE_URL``).
    nats_url
        NATS server for the log events; ``None`` writes the index only.
    """

    def __init__(self, database_url: str, nats_url: str | None) -> None:
        self.database_url = database_url
        self.nats_url = nats_url
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=QUEUE_LINES)
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain_forever, name="mxt-logsink", daemon=True)
        self._thread.start()

    def put(self, function: str, record: dict[str, Any]) -> None:
        """Queue one record of ``function`` if it belongs to a run."""
        run_id, task = run_fields(record)
        if run_id is None:
            return
        line = {
            "time": _time(record.get("time")),
            "level": LEVELS.get(str(record.get("level", "info")).lower(), "INFO"),
            "run_id": run_id,
            "task_id": task,
            "function": str(record.get("function") or function),
            "call_id": record.get("call_id"),
            "message": _message(record),
        }
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued line is written, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.lines.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _drain_forever(self) -> None:
        loop = asyncio.new_event_loop()
        publisher = EventPublisher(self.nats_url) if self.nats_url else None
        while True:
            batch = self._next_batch()
            try:
                self._write(batch)
                if publisher is not None:
                    loop.run_until_complete(_publish(publisher, batch))
            except Exception:  # noqa: BLE001 - the sink must survive a DB or NATS fault
                log.exception("log sink lost %d line(s)", len(batch))
            finally:
                for _ in batch:
                    self.lines.task_done()

    def _next_batch(self) -> list[dict[str, Any]]:
        batch = [self.lines.get()]
        try:
            while len(batch) < BATCH_LINES:
                batch.append(self.lines.get(timeout=BATCH_SECONDS if len(batch) < 2 else 0.01))
        except queue.Empty:
            pass
        return batch

    def _write(self, batch: list[dict[str, Any]]) -> None:
        from storage.db.engine import get_engine, transaction
        from storage.missiondb import LogSpec, append_logs

        with transaction(get_engine(self.database_url)) as db:
            append_logs(db, [LogSpec.model_validate(line) for line in batch])


async def _publish(publisher: EventPublisher, batch: list[dict[str, Any]]) -> None:
    for line in batch:
        await publisher.publish_now(
            LogLine(
                run_id=line["run_id"],
                level=line["level"].lower(),
                function=line["function"],
                message=line["message"],
                task=line["task_id"],
                call_id=line["call_id"],
                line_time=line["time"].isoformat(),
            )
        )


def _time(value: Any) -> datetime:
    """The record's time (ISO 8601), or now when it has none or an unreadable one."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _message(record: dict[str, Any]) -> str:
    message = str(record.get("message", ""))
    if record.get("traceback"):
        message = f"{message}\n{record['traceback']}"
    return message[:MESSAGE_CHARS]


_SINK: LogSink | None = None
_SINK_LOCK = threading.Lock()


def get_sink() -> LogSink:
    """The process's sink, started on first use from the settings."""
    global _SINK
    with _SINK_LOCK:
        if _SINK is None:
            from storage.settings import get_settings

            settings = get_settings()
            _SINK = LogSink(settings.resolved_database_url, settings.nats_url)
        return _SINK


def handle_record(function: str, record: dict[str, Any]) -> None:
    """The provider's hook: one JSON log line printed by ``function``."""
    if run_fields(record)[0] is None:
        return
    get_sink().put(function, record)
