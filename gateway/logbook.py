"""Captured output of function processes: ring buffer, log file, followers, log sink.

Each line a function prints becomes a record. JSON-object lines (the runtime's
structured logs) are kept as they are; other lines become ``{"level": "info",
"message": line}``. Records go to ``gateway.logsink.handle_record`` when that module
exists (the orchestrator's part publishes them on NATS and indexes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("mxt.gateway.logs")

FLUSH_PERIOD = 1.0  # seconds a captured line may wait in the buffer before the file

_SINK: Callable[[str, dict[str, Any]], Any] | None | bool = False


def log_sink() -> Callable[[str, dict[str, Any]], Any] | None:
    """``gateway.logsink.handle_record`` if that module exists (imported once, lazily)."""
    global _SINK
    if _SINK is False:
        try:
            _SINK = importlib.import_module("gateway.logsink").handle_record
        except (ImportError, AttributeError):
            _SINK = None
    return _SINK  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One captured line; ``timestamp`` is Unix seconds."""

    timestamp: float
    instance: str
    text: str

    def openfaas_json(self, function: str) -> bytes:
        """The NDJSON line of ``/system/logs`` as faas-cli reads it (``logs.Message``)."""
        stamp = datetime.fromtimestamp(self.timestamp, UTC).isoformat().replace("+00:00", "Z")
        return orjson.dumps(
            {
                "name": function,
                "namespace": "openfaas-fn",
                "instance": self.instance,
                "timestamp": stamp,
                "text": self.text,
            }
        )


def to_record(function: str, instance: str, text: str) -> dict[str, Any]:
    """The structured record of one output line."""
    if text.startswith("{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(text)
            if isinstance(parsed, dict):
                parsed.setdefault("function", function)
                parsed.setdefault("instance", instance)
                return parsed
    return {
        "time": datetime.now(UTC).isoformat(),
        "level": "info",
        "function": function,
        "instance": instance,
        "message": text,
    }


class LogBook:
    """The last ``capacity`` lines of one function, its log file and live followers.

    Parameters
    ----------
    capacity
        Lines kept in memory for ``/system/logs`` (older ones stay in the file).
    """

    def __init__(self, function: str, path: Path, capacity: int = 2000) -> None:
        self.function = function
        self.path = path
        self.lines: deque[LogLine] = deque(maxlen=capacity)
        self.followers: set[asyncio.Queue[LogLine]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        # block-buffered, flushed at most a second late: one write per call is costly
        self._file = path.open("a", buffering=65536, encoding="utf-8")
        self._flushed = time.time()

    def add(self, instance: str, text: str) -> None:
        """Record one line printed by replica ``instance``."""
        line = LogLine(time.time(), instance, text)
        self.lines.append(line)
        self._file.write(f"{instance} {text}\n")
        if line.timestamp - self._flushed > FLUSH_PERIOD:
            self._file.flush()
            self._flushed = line.timestamp
        for queue in self.followers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(line)
        sink = log_sink()
        if sink is not None:
            self._forward(sink, to_record(self.function, instance, text))

    def _forward(self, sink: Callable[[str, dict[str, Any]], Any], record: dict[str, Any]) -> None:
        # a failing sink must never stop the capture of a function's output
        try:
            result = sink(self.function, record)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_report_sink_failure)
        except Exception:  # noqa: BLE001
            log.exception("log sink failed for %s", self.function)

    def tail(self, since: float | None = None, count: int | None = None) -> list[LogLine]:
        """Kept lines newer than ``since`` (Unix seconds), the last ``count`` of them."""
        lines = [x for x in self.lines if since is None or x.timestamp >= since]
        if count is None:
            return lines
        return lines[-count:] if count else []

    def follow(self) -> asyncio.Queue[LogLine]:
        """A queue that receives every new line until :meth:`unfollow`."""
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10_000)
        self.followers.add(queue)
        return queue

    def unfollow(self, queue: asyncio.Queue[LogLine]) -> None:
        """Stop feeding a follower's queue."""
        self.followers.discard(queue)

    def close(self) -> None:
        """Close the log file."""
        self._file.close()


def _report_sink_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("log sink failed: %s", task.exception())
