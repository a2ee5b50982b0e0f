"""Captured output of function processes: ring buffer, log file, followers, log sink.

Each line a function prints becomes a record. JSON-object lines (the runtime's
structured logs) are kept as they are; other lines become ``{"level": "info",
"message": line}``. Records go to ``gateway.logsink.handle_record`` when that module
exists (the orchestrator's part publishes them on NATS and indexes them).

The log file is bounded: past ``MXT_LOG_FILE_BYTES`` it is rotated
(``<function>.log`` → ``<function>.log.1`` → ... ``.log.N``, ``N`` =
``MXT_LOG_FILE_BACKUPS``, the oldest deleted). A file that cannot be written (disk
full, read-only, removed directory) never stops the capture: the ring buffer, the
followers and the sink go on, the file's lines are dropped and counted
(:attr:`LogBook.dropped`), one error line says so, and the file is tried again every
:data:`RETRY_PERIOD` seconds.
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
from typing import Any, BinaryIO

import orjson

log = logging.getLogger("mxt.gateway.logs")

FLUSH_PERIOD = 1.0  # seconds a captured line may wait in the buffer before the file
RETRY_PERIOD = 30.0  # seconds between attempts to reopen a log file that failed

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
    function
        The function's name.
    path
        The log file (``DATA_DIR/logs/<function>.log``).
    capacity
        Lines kept in memory for ``/system/logs`` (older ones stay in the file).
    max_bytes
        Size past which the file is rotated, in bytes (``MXT_LOG_FILE_BYTES`` when
        omitted). Each file holds at most this much, or one line if a line is longer.
    backups
        Rotated files kept, ``<path>.1`` the newest (``MXT_LOG_FILE_BACKUPS`` when
        omitted); 0 truncates the file instead.
    """

    def __init__(
        self,
        function: str,
        path: Path,
        capacity: int = 2000,
        max_bytes: int | None = None,
        backups: int | None = None,
    ) -> None:
        if max_bytes is None or backups is None:
            from gateway.settings import GatewaySettings

            settings = GatewaySettings()
            max_bytes = settings.log_file_bytes if max_bytes is None else max_bytes
            backups = settings.log_file_backups if backups is None else backups
        if max_bytes <= 0 or backups < 0:
            raise ValueError(f"log file limits: max_bytes {max_bytes} > 0, backups {backups} >= 0")
        self.function = function
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.lines: deque[LogLine] = deque(maxlen=capacity)
        self.followers: set[asyncio.Queue[LogLine]] = set()
        #: Lines not written to the file (it could not be written), since the start.
        self.dropped = 0
        self._file: BinaryIO | None = None
        self._size = 0  # bytes in the current file, buffered ones included
        self._retry_at = 0.0  # when a failed file may be opened again (time.monotonic)
        self._dropping = False  # a failure was reported and lines are being dropped
        self._flushed = time.time()
        self._open()

    def _open(self) -> None:
        """Open the file for appending; a failure is reported once and retried later."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # block-buffered, flushed at most a second late: one write per call is costly
            self._file = self.path.open("ab", buffering=65536)
            self._size = self._file.tell()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Stop writing the file (its lines are dropped) until :data:`RETRY_PERIOD` passes."""
        if self._file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._file.close()  # flushing again fails too; the descriptor is closed
        self._file = None
        self._retry_at = time.monotonic() + RETRY_PERIOD
        if not self._dropping:
            self._dropping = True
            log.error(
                "log file %s cannot be written (%s); dropping its lines, retrying every "
                "%.0f s (ring buffer and followers unaffected)",
                self.path,
                exc,
                RETRY_PERIOD,
            )

    def _rotate(self) -> None:
        """``path`` → ``path.1`` → ... → ``path.<backups>``, the oldest deleted; reopen."""
        assert self._file is not None
        self._file.close()
        self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            self.path.with_name(f"{self.path.name}.{self.backups}").unlink(missing_ok=True)
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def _write(self, entry: bytes, now: float) -> None:
        """Append one entry to the file, rotating first if it would pass ``max_bytes``."""
        if self._file is None:
            if time.monotonic() < self._retry_at:
                self.dropped += 1
                return
            self._open()
            if self._file is None:
                self.dropped += 1
                return
        try:
            if self._size and self._size + len(entry) > self.max_bytes:
                self._rotate()
                if self._file is None:  # reopening failed (reported)
                    self.dropped += 1
                    return
            self._file.write(entry)
            self._size += len(entry)
            # after a failure, only a line that reached the disk says the file is back
            if self._dropping or now - self._flushed > FLUSH_PERIOD:
                self._file.flush()
                self._flushed = now
                if self._dropping:
                    self._dropping = False
                    log.warning(
                        "log file %s writable again; %d line(s) dropped so far",
                        self.path,
                        self.dropped,
                    )
        except (OSError, ValueError) as exc:
            self.dropped += 1  # at least this line; buffered ones may be lost with it
            self._fail(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def add(self, instance: str, text: str) -> None:
        """Record one line printed by replica ``instance``."""
        line = LogLine(time.time(), instance, text)
        self.lines.append(line)
        self._write(f"{instance} {text}\n".encode("utf-8", "replace"), line.timestamp)
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
        """Close the log file (a failing final flush drops its lines, counted)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.dropped += 1
                self._fail(exc)
            self._file = None


def _report_sink_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("log sink failed: %s", task.exception())
