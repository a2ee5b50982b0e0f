"""Typed events of runs on the ``MXT_EVENTS`` stream: ``mxt.events.<kind>.<run_id>``.

Run and task state changes, products registered, log lines and alerts (the position
notice) are published here for the dashboard, the websocket hub and operators. Every
publish carries a ``Nats-Msg-Id`` derived from what the event says, so a redelivered
completion that repeats a state change is dropped by the stream's dedupe window.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, ClassVar, Literal

import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field

from gateway.natsconn import connect

log = logging.getLogger("mxt.events")

#: Core-NATS subject where the position notice itself is published (GCN-style alert).
ALERT_SUBJECT = "mxt.alerts.notice"


class Event(BaseModel):
    """Base of every run event. ``time`` is Unix seconds."""

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str] = "event"
    run_id: str
    time: float = Field(default_factory=time.time)

    @property
    def subject(self) -> str:
        """The subject the event is published on."""
        return f"mxt.events.{self.kind}.{self.run_id}"

    def msg_id(self) -> str:
        """The ``Nats-Msg-Id``: the same state change always gets the same id."""
        return f"{self.kind}:{self.run_id}:{self.time:.6f}"

    def to_bytes(self) -> bytes:
        """The JSON payload, with the kind so that one consumer can read every event."""
        return self.model_dump_json().replace("{", f'{{"kind":"{self.kind}",', 1).encode()


RunState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
TaskState = Literal[
    "pending", "dispatched", "running", "succeeded", "failed", "cancelled", "skipped"
]


class RunStateChanged(Event):
    """A run changed state; ``reason`` says why it failed or was cancelled."""

    kind: ClassVar[str] = "run"
    programme: str
    state: RunState
    reason: str | None = None
    obs_id: str | None = None

    def msg_id(self) -> str:  # noqa: D102
        return f"run:{self.run_id}:{self.state}"


class TaskStateChanged(Event):
    """A task changed state; ``duration`` in seconds once it finished."""

    kind: ClassVar[str] = "task"
    task: str
    state: TaskState
    attempt: int
    reason: str | None = None
    duration: float | None = None

    def msg_id(self) -> str:  # noqa: D102
        return f"task:{self.run_id}:{self.task}:{self.attempt}:{self.state}"


class ProductRegistered(Event):
    """A product was registered in missiondb."""

    kind: ClassVar[str] = "product"
    task: str
    product: str
    key: str
    sha256: str
    size: int

    def msg_id(self) -> str:  # noqa: D102
        return f"product:{self.key}"


class LogLine(Event):
    """One structured log line of a function serving a run."""

    kind: ClassVar[str] = "log"
    level: str
    function: str
    message: str
    task: str | None = None
    call_id: str | None = None
    line_time: str | None = None

    def msg_id(self) -> str:  # noqa: D102
        digest = hashlib.sha1(self.message.encode()).hexdigest()[:12]
        return f"log:{self.run_id}:{self.call_id}:{self.line_time}:{digest}"


class Alert(Event):
    """An alert of a run: the position notice (the JSON notice itself in ``notice``)."""

    kind: ClassVar[str] = "alert"
    alert_type: str
    task: str
    notice: dict[str, Any]
    voevent_key: str | None = None

    def msg_id(self) -> str:  # noqa: D102
        return f"alert:{self.run_id}:{self.alert_type}"


class EventPublisher:
    """Publishes events on JetStream; one per process, connected lazily.

    Parameters
    ----------
    nats_url
        The NATS server (``MXT_NATS_URL``).
    """

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    async def _jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._js is None or self._nc is None or self._nc.is_closed:
                # reconnect forever: a restarted nats-server must not lose later events
                self._nc = await connect(self.nats_url, reconnect_time_wait=0.2)
                self._js = self._nc.jetstream()
            return self._js

    async def publish(self, event: Event) -> None:
        """Publish one event in the background; :meth:`flush` waits for the acks.

        The caller goes on at once: a run advances without waiting for the feed, and
        events still leave in the order they were published (one connection, sent in
        task creation order).
        """
        task = asyncio.create_task(self.publish_now(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait until every event published so far is acknowledged (or has failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def publish_now(self, event: Event) -> None:
        """Publish one event and wait for its ack; a fault is logged, never raised."""
        try:
            js = await self._jetstream()
            await js.publish(
                event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.msg_id()}, timeout=5
            )
        except Exception as exc:  # noqa: BLE001 - the feed must never fail the run
            log.warning("event %s not published: %s", event.subject, exc)

    async def publish_many(self, events: list[Event]) -> None:
        """Publish several events in the background, in order."""
        for event in events:
            await self.publish(event)

    async def publish_alert(self, alert: Alert) -> None:
        """Publish the notice on the alert subject and the alert event on the stream."""
        try:
            await self._jetstream()
            assert self._nc is not None
            await self._nc.publish(ALERT_SUBJECT, orjson.dumps(alert.notice))
            await self._nc.flush(timeout=5)
        except Exception as exc:  # noqa: BLE001
            log.warning("notice not published on %s: %s", ALERT_SUBJECT, exc)
        await self.publish(alert)

    async def close(self) -> None:
        """Wait for pending events, then drain and close the connection."""
        await self.flush()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = self._js = None


__all__ = [
    "ALERT_SUBJECT",
    "Alert",
    "Event",
    "EventPublisher",
    "LogLine",
    "ProductRegistered",
    "RunStateChanged",
    "TaskStateChanged",
]
