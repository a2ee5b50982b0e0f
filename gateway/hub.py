"""Websocket hub: the events stream (``MXT_EVENTS``) pushed live to browsers and tools.

Mounted by the gateway at ``/mxt_websocket``; clients connect to
``/mxt_websocket/events`` with optional filters::

    ws://host/mxt_websocket/events?run=<run_id>&programme=ToO&kind=task,log&since_seq=N

Each client gets its own JetStream *ordered* consumer that starts at ``since_seq + 1``
(or at the end of the stream), so a reconnecting client that passes the last sequence
it saw resumes without gaps or duplicates, and one client's pace never touches
another's. Every frame is a JSON object:

- ``{"type": "hello", "since_seq": N, "gap": false, "filters": {...}}`` once, first;
  ``since_seq`` is the sequence to reconnect with if no event arrives before a
  disconnect; ``gap`` is true when events after the client's ``since_seq`` have already
  expired from the stream (30 days), so it should reload what it shows;
- ``{"type": "event", "seq": N, "kind": ..., "run_id": ..., "event": {...}}`` per event
  (``event`` is the payload published by ``gateway.events``);
- ``{"type": "pong"}`` in answer to a client's ``ping``.

The hub is read-only: a client message other than a ping closes the socket (1008).
A bad filter closes it with 1008 and the reason; a client that cannot keep up (its
bounded queue overflows) is closed with 1013 ("too slow"); a missing events stream or
NATS outage closes with 1011.

Bounded: at most ``MXT_WS_MAX_CLIENTS`` clients at once (100); the next one is closed
with 1013 ("try again later") before any consumer is made. A replay goes back at most
``MXT_WS_MAX_REPLAY`` stream sequences (10,000, counted over every kind and run): a
client asking for more gets the last ones, from ``since_seq`` = last sequence - the
cap, with ``gap: true`` in its hello, as when the events it asked for have expired. A
``since_seq`` past the stream's end (a recreated stream) starts at the end, also with
``gap: true``; one that is not an integer in 0..2**63 - 1 closes the socket with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.messages import EVENTS_STREAM
from storage.settings import positive_env

EVENT_SUBJECT_PREFIX = "mxt.events"
EVENT_KINDS = ("run", "task", "product", "log", "alert")
PROGRAMMES = ("GP", "CP", "ToO")
DEFAULT_QUEUE_SIZE = 1024
"""Events buffered per client before it is dropped as too slow (messages)."""
DEFAULT_MAX_CLIENTS = 100
"""Websocket clients served at once (``MXT_WS_MAX_CLIENTS``)."""
DEFAULT_MAX_REPLAY = 10_000
"""Stream sequences a client's ``since_seq`` may go back (``MXT_WS_MAX_REPLAY``)."""
MAX_SEQUENCE = 2**63 - 1
"""Largest ``since_seq`` accepted (JetStream sequences are 64-bit)."""

CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SEQUENCE = re.compile(r"^[0-9]{1,19}$")  # ASCII digits only (int() takes others)
_ALLOWED_PARAMS = ("run", "programme", "kind", "since_seq")
_PROGRAMME_CACHE = 10_000  # runs whose programme the hub remembers
_HEARTBEAT = 1.0  # seconds between JetStream heartbeats of an idle client consumer
_CLOSE_TIMEOUT = 60.0  # seconds a close frame may wait behind data a client has not read


class FilterError(ValueError):
    """A query parameter of the websocket URL is invalid; the message names it."""


@dataclass(frozen=True)
class EventFilter:
    """What one client asked for.

    Attributes
    ----------
    run_id
        Only events of this run (``None``: all runs).
    programmes
        Only events whose payload names one of these programmes (empty: all).
    kinds
        Only these event kinds (empty: all).
    since_seq
        Last stream sequence the client already has (``None``: start at the end).
    """

    run_id: str | None = None
    programmes: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    since_seq: int | None = None

    @property
    def subject(self) -> str:
        """The narrowest NATS subject covering the filter (kinds beyond one filter here)."""
        kind = next(iter(self.kinds)) if len(self.kinds) == 1 else "*"
        return f"{EVENT_SUBJECT_PREFIX}.{kind}.{self.run_id or '*'}"

    def as_dict(self) -> dict[str, Any]:
        """The filter as JSON-able data, echoed to the client in the hello frame."""
        return {
            "run": self.run_id,
            "programme": sorted(self.programmes),
            "kind": sorted(self.kinds),
            "since_seq": self.since_seq,
        }

    def accepts(self, kind: str, programme: str | None) -> bool:
        """Whether an event of ``kind``, of a run of ``programme``, goes to the client."""
        if self.kinds and kind not in self.kinds:
            return False
        return not self.programmes or _canonical_programme(programme or "") in self.programmes


def _canonical_programme(name: str) -> str | None:
    for programme in PROGRAMMES:
        if name.lower() == programme.lower():
            return programme
    return None


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_filter(params: dict[str, str]) -> EventFilter:
    """Validate the query parameters of a websocket URL.

    Parameters
    ----------
    params
        Query parameters (``run``, ``programme``, ``kind``, ``since_seq``).

    Raises
    ------
    FilterError
        With a message naming the offending parameter and the valid choices.
    """
    unknown = sorted(set(params) - set(_ALLOWED_PARAMS))
    if unknown:
        raise FilterError(
            f"unknown filter {unknown[0]!r}; valid filters: {', '.join(_ALLOWED_PARAMS)}"
        )
    run_id = params.get("run") or None
    if run_id is not None and not _RUN_ID.match(run_id):
        raise FilterError("run: expected 1-128 characters among A-Z a-z 0-9 _ -")
    kinds = _split_list(params.get("kind", ""))
    bad_kinds = [kind for kind in kinds if kind not in EVENT_KINDS]
    if bad_kinds:
        raise FilterError(f"kind: unknown {bad_kinds[0]!r}; valid kinds: {', '.join(EVENT_KINDS)}")
    programmes = []
    for name in _split_list(params.get("programme", "")):
        programme = _canonical_programme(name)
        if programme is None:
            raise FilterError(
                f"programme: unknown {name!r}; valid programmes: {', '.join(PROGRAMMES)}"
            )
        programmes.append(programme)
    since_seq = None
    if params.get("since_seq", "") != "":
        raw = params["since_seq"]
        if not _SEQUENCE.match(raw) or int(raw) > MAX_SEQUENCE:
            raise FilterError(f"since_seq: expected an integer from 0 to {MAX_SEQUENCE}")
        since_seq = int(raw)
    return EventFilter(run_id, frozenset(programmes), frozenset(kinds), since_seq)


def _event_frame(seq: int, subject: str, data: bytes) -> tuple[str, str, dict[str, Any], bytes]:
    """Kind, run id, payload and JSON frame of one stream message (``mxt.events.kind.run``)."""
    _, _, kind, run_id = (subject.split(".", 3) + ["", "", "", ""])[:4]
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = {"raw": data.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    frame = orjson.dumps(
        {"type": "event", "seq": seq, "kind": kind, "run_id": run_id, "event": payload}
    )
    return kind, run_id, payload, frame


@dataclass
class _Hub:
    """Per-process state: one NATS connection shared by every client's consumer.

    Only run events name the programme; the programme of other events' runs is looked up
    once per run (the run's last run event) and remembered.
    """

    nats_url: str | None
    queue_size: int
    shared_nc: Any = None
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_replay: int = DEFAULT_MAX_REPLAY
    clients: int = 0  # websockets being served now
    _nc: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _programmes: OrderedDict[str, str | None] = field(default_factory=OrderedDict)

    async def jetstream(self) -> Any:
        """JetStream context: the gateway's connection, or one of ours opened on first use."""
        from gateway.natsconn import connect

        if self.shared_nc is not None and self.shared_nc.is_connected:
            return self.shared_nc.jetstream()
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                url = self.nats_url or os.environ.get("MXT_NATS_URL", "nats://127.0.0.1:4222")
                self._nc = await connect(url, connect_timeout=2, name="mxt-websocket-hub")
        return self._nc.jetstream()

    def remember_programme(self, run_id: str, programme: str | None) -> None:
        """Cache a run's programme (bounded: the oldest runs are forgotten first)."""
        self._programmes[run_id] = programme
        self._programmes.move_to_end(run_id)
        while len(self._programmes) > _PROGRAMME_CACHE:
            self._programmes.popitem(last=False)

    async def programme_of(self, run_id: str) -> str | None:
        """The programme of a run, from its last run event (``None`` if it has none)."""
        if run_id in self._programmes:
            return self._programmes[run_id]
        js = await self.jetstream()
        try:
            msg = await js.get_last_msg(EVENTS_STREAM, f"{EVENT_SUBJECT_PREFIX}.run.{run_id}")
            programme = orjson.loads(msg.data).get("programme")
        except Exception:  # no run event (yet), or not JSON: unknown programme
            return None
        self.remember_programme(run_id, programme)
        return programme

    async def aclose(self) -> None:
        """Drain the hub's own NATS connection (the gateway's is the gateway's to close)."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = None


class _Client:
    """One websocket connection: a bounded queue between its consumer and its socket."""

    def __init__(self, websocket: WebSocket, event_filter: EventFilter, hub: _Hub) -> None:
        self.websocket = websocket
        self.filter = event_filter
        self.hub = hub
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=hub.queue_size)
        self.too_slow = asyncio.Event()

    async def on_message(self, msg: Any) -> None:
        """NATS callback: never blocks; a full queue marks the client too slow."""
        if self.too_slow.is_set():
            return
        kind, run_id, payload, frame = _event_frame(
            msg.metadata.sequence.stream, msg.subject, msg.data
        )
        programme = None
        if kind == "run":
            programme = payload.get("programme")
            self.hub.remember_programme(run_id, programme)
        elif self.filter.programmes:
            programme = await self.hub.programme_of(run_id)
        if not self.filter.accepts(kind, programme):
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.too_slow.set()
            return
        # Let the sender run between messages: a burst from the stream (replay, fan-out)
        # then fills the queue only if the socket itself is blocked.
        await asyncio.sleep(0)

    async def send_events(self) -> None:
        """Forward queued frames to the socket in order, at the socket's pace."""
        while True:
            frame = await self.queue.get()
            await self.websocket.send_text(frame.decode())

    async def read_pings(self) -> str:
        """Answer pings; return the reason to close on anything else or on disconnect."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return ""
            text = message.get("text") or ""
            if text.strip() in ("ping", '{"type":"ping"}', '{"type": "ping"}'):
                await self.websocket.send_text('{"type":"pong"}')
                continue
            return "read-only: only 'ping' messages are accepted"


async def _start_sequence(
    js: Any, event_filter: EventFilter, max_replay: int = DEFAULT_MAX_REPLAY
) -> tuple[int, bool]:
    """The last sequence the client has (its own, or the stream's end now), and whether
    events it asked for are skipped (it resumes with a gap): expired from the stream,
    more than ``max_replay`` sequences back, or a ``since_seq`` past the stream's end."""
    info = await js.stream_info(EVENTS_STREAM)
    last = int(info.state.last_seq)
    since = event_filter.since_seq
    if since is None:
        return last, False
    if since > last:  # a sequence this stream never reached: it was recreated
        return last, True
    if last - since > max_replay:
        return last - max_replay, True
    return since, since + 1 < int(info.state.first_seq)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # A client that stopped reading cannot take the close frame; do not wait forever.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), _CLOSE_TIMEOUT)


async def _serve_client(websocket: WebSocket, hub: _Hub, event_filter: EventFilter) -> None:
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    try:
        js = await hub.jetstream()
        since, gap = await _start_sequence(js, event_filter, hub.max_replay)
    except NotFoundError:
        await _close(websocket, CLOSE_INTERNAL, f"events stream {EVENTS_STREAM} does not exist")
        return
    except Exception as exc:  # NATS down or unreachable: tell the client why
        await _close(websocket, CLOSE_INTERNAL, f"events unavailable: {exc.__class__.__name__}")
        return
    client = _Client(websocket, event_filter, hub)
    await websocket.send_text(
        orjson.dumps(
            {"type": "hello", "since_seq": since, "gap": gap, "filters": event_filter.as_dict()}
        ).decode()
    )
    subscription = await js.subscribe(
        event_filter.subject,
        stream=EVENTS_STREAM,
        cb=client.on_message,
        ordered_consumer=True,
        # missed heartbeats tell a consumer lost with a restarted nats-server: it is then
        # recreated from the last delivered sequence (seconds)
        idle_heartbeat=_HEARTBEAT,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=since + 1),
    )
    sender = asyncio.create_task(client.send_events())
    reader = asyncio.create_task(client.read_pings())
    slow = asyncio.create_task(client.too_slow.wait())
    try:
        done, _ = await asyncio.wait({sender, reader, slow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        for task in (sender, reader, slow):
            task.cancel()
    if slow in done:
        await _close(
            websocket, CLOSE_TRY_AGAIN, f"too slow: more than {hub.queue_size} events pending"
        )
    elif reader in done and not reader.cancelled() and reader.exception() is None:
        reason = reader.result()
        if reason:
            await _close(websocket, CLOSE_POLICY, reason)


async def json_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTP errors (404, 405) as JSON, like every other error of the gateway."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return JSONResponse({"detail": detail, "path": request.url.path}, status_code=status)


def create_app(
    nats_url: str | None = None,
    nc: Any = None,
    queue_size: int | None = None,
    max_clients: int | None = None,
    max_replay: int | None = None,
) -> Starlette:
    """The websocket hub as an ASGI app (the gateway mounts it at ``/mxt_websocket``).

    Parameters
    ----------
    nats_url
        NATS server; ``MXT_NATS_URL`` when omitted (read at first connection).
    nc
        The gateway's NATS connection, shared when given (else the hub opens its own).
    queue_size
        Events buffered per client before it is dropped (messages);
        ``MXT_WEBSOCKET_QUEUE`` or 1024 when omitted.
    max_clients
        Clients served at once; past it a new client is closed with 1013 before any
        consumer is made. ``MXT_WS_MAX_CLIENTS`` or 100 when omitted.
    max_replay
        Stream sequences a ``since_seq`` may go back (messages);
        ``MXT_WS_MAX_REPLAY`` or 10,000 when omitted.

    Raises
    ------
    ValueError
        A setting in the environment is not a positive integer (naming it).
    """
    size = queue_size or positive_env("MXT_WEBSOCKET_QUEUE", DEFAULT_QUEUE_SIZE)
    hub = _Hub(
        nats_url,
        size,
        shared_nc=nc,
        max_clients=max_clients or positive_env("MXT_WS_MAX_CLIENTS", DEFAULT_MAX_CLIENTS),
        max_replay=max_replay or positive_env("MXT_WS_MAX_REPLAY", DEFAULT_MAX_REPLAY),
    )

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        if hub.clients >= hub.max_clients:
            await _close(
                websocket,
                CLOSE_TRY_AGAIN,
                f"try again later: {hub.max_clients} clients connected (MXT_WS_MAX_CLIENTS)",
            )
            return
        hub.clients += 1  # no await since the check: no other client slips in between
        try:
            try:
                event_filter = parse_filter(dict(websocket.query_params))
            except FilterError as exc:
                await _close(websocket, CLOSE_POLICY, str(exc))
                return
            with contextlib.suppress(WebSocketDisconnect):
                await _serve_client(websocket, hub, event_filter)
        finally:
            hub.clients -= 1

    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "websocket": str(request.url_for("events")),
                "filters": {
                    "run": "run id",
                    "programme": ", ".join(PROGRAMMES),
                    "kind": ", ".join(EVENT_KINDS),
                    "since_seq": "last stream sequence received (resume)",
                },
                "clients": hub.clients,
                "max_clients": hub.max_clients,
                "max_replay": hub.max_replay,
            }
        )

    app = Starlette(
        routes=[
            WebSocketRoute("/events", events, name="events"),
            WebSocketRoute("/", events),
            Route("/", describe),
        ],
        exception_handlers={HTTPException: json_http_error},
    )
    app.state.hub = hub
    return app
