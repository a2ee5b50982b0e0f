"""The queue worker: runs durable async calls from ``MXT_ASYNC`` through the gateway.

At-least-once: a message is acked only after its outcome is recorded (status,
completion event, callback). Transient failures (5xx, 408, 425, 429, timeouts,
refused connections) are retried with exponential backoff and jitter, honouring
``Retry-After``, by ``nak(delay)``; the attempt number is JetStream's delivery count,
so a worker that dies mid-call also counts an attempt. After ``max_attempts`` the call
goes to ``MXT_DLQ``; 4xx answers fail at once. Runs inside ``mxt up`` and alone as
``mxt worker`` (several workers share the durable consumers).

Calls run in lanes (``gateway.lanes``): each lane pulls its own durable consumer and
has its own slots, so ToO brick calls never wait behind other work; within a lane a
function runs at most ``function_slots`` calls at once, the lane's other calls held
(kept from redelivery) until one of its calls ends, while other functions go ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import orjson
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pydantic import ValidationError
from yarl import URL

from bricks.errors import BadInput, NotFound, classify_status
from gateway import messages as m
from gateway.auth import PLATFORM_HEADER
from gateway.calls import CallStore
from gateway.egress import EgressPolicy, EgressRefused, client_session
from gateway.lanes import LANES, function_of, function_slots, lane_durable, lane_of, parse_slots
from gateway.policy import safe_subpath
from gateway.provider import FunctionUnavailable, LocalProvider
from gateway.pull import Puller
from gateway.settings import GatewaySettings

log = logging.getLogger("mxt.gateway.worker")

PROGRESS_PERIOD = 10.0  # seconds between in_progress() of a long call (ack_wait is 30 s)
CALLBACK_DELAYS = (0.2, 1.0, 3.0)  # seconds before each callback retry
COMPLETION_BODY_LIMIT = 256 * 1024  # bytes of the function's body kept in a completion
CALLBACK_ANSWER_LIMIT = 1024  # bytes of a callback receiver's answer read (for the log)
DRAIN_TIMEOUT = 10.0  # seconds calls in flight get to finish on stop
NATS_OUTAGE = 60.0  # seconds an outcome waits for NATS to come back before giving up
HOLD_FACTOR = 4  # a lane holds up to this many times its slots waiting for a function's slot
T = TypeVar("T")


@dataclass
class Outcome:
    """What one attempt of a call gave; ``duration`` in seconds, ``retry_after`` too."""

    status: int | None
    body: bytes = b""
    content_type: str | None = None
    duration: float = 0.0
    error: str | None = None
    retry_after: float | None = None

    @property
    def kind(self) -> str:
        """The taxonomy kind: ok, transient, bad_input or unprocessable."""
        return "transient" if self.status is None else classify_status(self.status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def retry_delay(attempt: int, settings: GatewaySettings, retry_after: float | None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with jitter, or ``Retry-After``."""
    if retry_after is not None:
        return min(retry_after, settings.retry_max_delay)
    delay = settings.retry_base_delay * 2 ** (attempt - 1)
    return min(delay * random.uniform(0.5, 1.5), settings.retry_max_delay)


async def through_outage(publish: Callable[[], Awaitable[T]]) -> T:
    """Run a NATS operation, retrying while the server is unreachable (up to a minute).

    The call has run already: waiting out a NATS restart here records its outcome,
    where giving up would have the function run again after redelivery.
    """
    deadline = time.monotonic() + NATS_OUTAGE
    while True:
        try:
            return await publish()
        except NatsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def keep_alive(msg: Msg) -> None:
    """Tell JetStream every ``PROGRESS_PERIOD`` s that ``msg`` is still being worked on."""
    while True:
        await asyncio.sleep(PROGRESS_PERIOD)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def _quietly(operation: Awaitable[object]) -> None:
    with contextlib.suppress(NatsError):
        await operation


@dataclass
class Lane:
    """One lane's slots: calls running by function, and calls held for a function's slot."""

    name: str
    slots: int
    per_function: int
    running: dict[str, int] = field(default_factory=dict)
    active: int = 0
    held: deque[tuple[str, Msg, asyncio.Task[None]]] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def room(self) -> int:
        """Messages the lane may take now (running or held)."""
        return self.slots * (1 + HOLD_FACTOR) - self.active - len(self.held)

    def may_start(self, function: str) -> bool:
        """Whether a call of ``function`` may start now."""
        return self.active < self.slots and self.running.get(function, 0) < self.per_function


def error_reason(outcome: Outcome) -> str:
    """A sentence on a failed attempt, with the function's own reason when it gave one."""
    if outcome.error:
        return outcome.error
    text = outcome.body[:500].decode("utf-8", "replace")
    return f"HTTP {outcome.status}: {text}"


class QueueWorker:
    """Pulls async calls and runs them, ``worker_concurrency`` at a time.

    Parameters
    ----------
    platform_token
        The platform's credential: replicas (and the gateway, for a standalone
        worker) take calls only with it. It goes only to the function the call
        names, on a sub-path checked not to climb (``gateway.policy.safe_subpath``).
    provider
        The stack's provider, to call replicas directly; ``None`` for a standalone
        worker, which calls through the gateway.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        js: JetStreamContext,
        calls: CallStore,
        platform_token: str,
        provider: LocalProvider | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.js = js
        self.calls = calls
        self.platform_token = platform_token
        self.inflight: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._loop_tasks: list[asyncio.Task[None]] = []
        slots = parse_slots(settings.lane_slots, settings.worker_concurrency)
        self.lanes = {
            name: Lane(name, slots[name], function_slots(slots[name], settings.function_slots))
            for name in LANES
        }
        self.subs: list[JetStreamContext.PullSubscription] = []
        self.session: aiohttp.ClientSession | None = None
        # callbacks go to URLs callers chose: a session of their own, under the policy
        self.callback_policy = EgressPolicy.from_setting(settings.callback_allow)
        self.callback_session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Bind to each lane's durable consumer (and the one from before lanes), pull."""
        self.callback_session = client_session(
            self.callback_policy, connector_options={"keepalive_timeout": 30}, auto_decompress=False
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,
        )
        for name, lane in self.lanes.items():
            sub = await self.js.pull_subscribe_bind(lane_durable(name), stream=m.ASYNC_STREAM)
            self.subs.append(sub)
            self._loop_tasks.append(
                asyncio.create_task(self._pull_loop(Puller(sub), lane), name=f"lane {name}")
            )
        # calls queued on mxt.async.<function> before lanes: each to the lane it names
        legacy = await self.js.pull_subscribe_bind(m.WORKER_DURABLE, stream=m.ASYNC_STREAM)
        self.subs.append(legacy)
        self._loop_tasks.append(
            asyncio.create_task(self._pull_loop(Puller(legacy), None), name="lane (legacy)")
        )

    async def stop(self) -> None:
        """Stop pulling, let calls in flight finish (bounded), then close."""
        self.stopping = True
        for loop_task in self._loop_tasks:
            loop_task.cancel()
        await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        for lane in self.lanes.values():
            # held calls go back at once rather than after their ack wait
            while lane.held:
                _, msg, progress = lane.held.popleft()
                progress.cancel()
                with contextlib.suppress(Exception):
                    await msg.nak()
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=DRAIN_TIMEOUT)
        for task in self.inflight:
            task.cancel()
        await asyncio.gather(*self.inflight, return_exceptions=True)
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.session is not None:
            await self.session.close()
        if self.callback_session is not None:
            await self.callback_session.close()

    async def _pull_loop(self, puller: Puller, lane: Lane | None) -> None:
        """Pull one consumer while its lane has room (``None``: the consumer from before
        lanes, whose calls go to the lane their headers name, as long as ``public`` has room)."""
        gauge = lane or self.lanes["public"]
        while not self.stopping:
            free = gauge.room()
            if free <= 0:
                gauge.changed.clear()
                await gauge.changed.wait()
                continue
            try:
                batch = await puller.fetch(min(free, 128))
            except ConnectionClosedError:
                return
            except Exception:  # noqa: BLE001 - NATS reconnecting: try again shortly
                log.exception("fetch from %s failed", m.ASYNC_STREAM)
                await asyncio.sleep(0.5)
                continue
            for msg in batch:
                self._admit(lane or self.lanes[_legacy_lane(msg)], function_of(msg.subject), msg)

    def _admit(self, lane: Lane, function: str, msg: Msg) -> None:
        """Start the call now, or hold it (kept from redelivery) for its function's slot."""
        if lane.may_start(function):
            self._start(lane, function, msg)
        else:
            lane.held.append((function, msg, asyncio.create_task(keep_alive(msg))))

    def _start(self, lane: Lane, function: str, msg: Msg) -> None:
        lane.active += 1
        lane.running[function] = lane.running.get(function, 0) + 1
        task = asyncio.create_task(self.process(msg))
        self.inflight.add(task)
        task.add_done_callback(lambda t: self._done(t, lane, function))

    def _done(self, task: asyncio.Task[None], lane: Lane, function: str) -> None:
        self.inflight.discard(task)
        lane.active -= 1
        left = lane.running[function] - 1
        if left:
            lane.running[function] = left
        else:
            del lane.running[function]
        if lane.held and not self.stopping:
            self._release(lane)
        lane.changed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("async call failed in the worker: %r", task.exception())

    def _release(self, lane: Lane) -> None:
        """Start held calls, oldest first, whose function has a slot again."""
        kept: deque[tuple[str, Msg, asyncio.Task[None]]] = deque()
        while lane.held and lane.active < lane.slots:
            function, msg, progress = lane.held.popleft()
            if lane.may_start(function):
                progress.cancel()
                self._start(lane, function, msg)
            else:
                kept.append((function, msg, progress))
        kept.extend(lane.held)
        lane.held = kept

    async def process(self, msg: Msg) -> None:
        """Run one delivery of a call and settle it (ack, nak with delay, or dead letter)."""
        attempt = msg.metadata.num_delivered
        try:
            call = m.AsyncCall.from_bytes(msg.data)
        except ValidationError as exc:
            log.error("unreadable message on %s, terminated: %s", msg.subject, exc)
            await msg.term()
            return
        status = m.CallStatus(
            call_id=call.call_id,
            function=call.function,
            state="running",
            attempts=attempt,
            enqueued_at=call.enqueued_at,
        )
        # "running" is recorded while the call runs, not before it; informative only
        running = asyncio.ensure_future(_quietly(self.calls.put(status.model_copy())))
        try:
            outcome = await self.invoke_holding(call, msg)
        finally:
            await running
        status.status_code, status.duration = outcome.status, outcome.duration
        if outcome.kind == "ok":
            await self._finish(msg, call, outcome, status, "succeeded")
        elif outcome.kind != "transient":
            status.last_error = error_reason(outcome)
            await self._finish(msg, call, outcome, status, "failed")
        elif attempt < self.settings.max_attempts:
            status.state, status.last_error = "queued", error_reason(outcome)
            await through_outage(lambda: self.calls.put(status))
            await msg.nak(delay=retry_delay(attempt, self.settings, outcome.retry_after))
        else:
            status.last_error = error_reason(outcome)
            await self.dead_letter(call, outcome, status.last_error, status.attempts)
            await self._finish(msg, call, outcome, status, "dead-lettered")

    async def _endpoint(self, call: m.AsyncCall) -> tuple[str, float]:
        """Where the call goes and its time limit (seconds).

        Inside the stack the worker calls a replica directly (one hop less);
        a standalone worker goes through the gateway's ``/function/`` route.
        """
        if self.provider is None:
            return (
                f"{self.settings.gateway_url}/function/{call.function}",
                self.settings.async_timeout,
            )
        deployment = self.provider.deployments.get(call.function)
        if deployment is None:
            raise NotFound(f"no function named {call.function!r}", function=call.function)
        replica = await deployment.pick(self.settings.start_timeout)
        deployment.invocations += 1
        return replica.url, deployment.spec.timeout or self.settings.async_timeout

    async def invoke_holding(self, call: m.AsyncCall, msg: Msg) -> Outcome:
        """:meth:`invoke` for the message ``msg`` brought, kept from redelivery meanwhile.

        Cancelled (the process is stopping), the message is handed back at once
        rather than after its ack wait.
        """
        progress = asyncio.create_task(keep_alive(msg))
        try:
            return await self.invoke(call)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        finally:
            progress.cancel()

    async def invoke(self, call: m.AsyncCall) -> Outcome:
        """One attempt of the call; connection faults and timeouts are transient outcomes."""
        assert self.session is not None
        started = time.monotonic()
        try:
            url, limit = await self._endpoint(call)
        except NotFound as exc:
            return Outcome(404, orjson.dumps(exc.to_dict()), "application/json", error=exc.reason)
        except FunctionUnavailable as exc:
            return Outcome(None, duration=time.monotonic() - started, error=str(exc))
        try:
            target = call_url(url, call)
        except BadInput as exc:
            return Outcome(400, orjson.dumps(exc.to_dict()), "application/json", error=exc.reason)
        headers = dict(call.headers)
        headers["X-Call-Id"] = call.call_id
        headers[PLATFORM_HEADER] = self.platform_token
        try:
            async with self.session.request(
                call.method,
                target,
                data=call.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as resp:
                body = await resp.read()
                return Outcome(
                    status=resp.status,
                    body=body,
                    content_type=resp.headers.get("Content-Type"),
                    duration=time.monotonic() - started,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(
                status=None,
                duration=time.monotonic() - started,
                error=f"function {call.function!r} unreachable or too slow: "
                f"{type(exc).__name__}: {exc}",
            )

    async def dead_letter(
        self, call: m.AsyncCall, outcome: Outcome, reason: str | None, attempts: int
    ) -> None:
        """Publish the call on ``MXT_DLQ`` (once per redrive), waiting out a NATS outage."""
        letter = m.DeadLetter(
            call=call,
            reason=reason or "retries exhausted",
            attempts=attempts,
            status_code=outcome.status,
        )
        await through_outage(
            lambda: self.js.publish(
                m.dlq_subject(call.function),
                letter.to_bytes(),
                headers={"Nats-Msg-Id": f"{call.call_id}:dlq:{call.redrives}"},
            )
        )

    async def _finish(
        self,
        msg: Msg,
        call: m.AsyncCall,
        outcome: Outcome,
        status: m.CallStatus,
        state: str,
    ) -> None:
        status.state = state  # type: ignore[assignment]
        completed = m.CallCompleted(
            call_id=call.call_id,
            function=call.function,
            state=state,  # type: ignore[arg-type]
            status_code=outcome.status,
            attempts=status.attempts,
            duration=outcome.duration,
            content_type=outcome.content_type,
            error=status.last_error,
        )
        if len(outcome.body) <= COMPLETION_BODY_LIMIT:
            completed.body_b64 = m.AsyncCall.encode_body(outcome.body)
        else:
            completed.body_truncated = True
        await asyncio.gather(
            through_outage(lambda: self.calls.put(status)),
            through_outage(
                lambda: self.js.publish(
                    m.completed_subject(call.function),
                    completed.to_bytes(),
                    headers={"Nats-Msg-Id": f"{call.call_id}:done:{call.redrives}"},
                )
            ),
        )
        if call.callback_url:
            # up to four attempts of callback_timeout each: keep the message from redelivery
            progress = asyncio.create_task(keep_alive(msg))
            try:
                await self.callback(call, outcome, status.attempts)
            finally:
                progress.cancel()
        await msg.ack()

    async def callback(self, call: m.AsyncCall, outcome: Outcome, attempts: int) -> bool:
        """POST the function's answer to ``X-Callback-Url``; retried a few times.

        Through :attr:`callback_session` only (``gateway.egress``: the outbound policy
        judged again at connect time). Redirects are not followed (a 3xx fails the
        callback), each attempt takes at most ``callback_timeout`` seconds, the
        receiver's answer is read up to ``CALLBACK_ANSWER_LIMIT`` bytes, and a function
        body over ``COMPLETION_BODY_LIMIT`` bytes is not sent (as in the completion:
        ``X-Function-Body-Truncated: true``, its size in ``X-Function-Body-Bytes``).

        Returns
        -------
        bool
            Whether the receiver answered with a 2xx.
        """
        assert self.callback_session is not None and call.callback_url
        headers = {
            "X-Call-Id": call.call_id,
            "X-Function-Name": call.function,
            "X-Function-Status": str(outcome.status or 502),
            "X-Duration-Seconds": f"{outcome.duration:.6f}",
            "X-Retry-Count": str(max(0, attempts - 1)),
        }
        body = outcome.body
        if len(body) > COMPLETION_BODY_LIMIT:
            headers["X-Function-Body-Truncated"] = "true"
            headers["X-Function-Body-Bytes"] = str(len(body))
            body = b""
        elif outcome.content_type:
            headers["Content-Type"] = outcome.content_type
        failure = "no attempt"
        for delay in (0.0, *CALLBACK_DELAYS):
            await asyncio.sleep(delay)
            try:
                async with self.callback_session.post(
                    call.callback_url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout),
                ) as resp:
                    if resp.status < 300:
                        return True
                    answer = await resp.content.read(CALLBACK_ANSWER_LIMIT)
                    failure = f"HTTP {resp.status}: {answer.decode('utf-8', 'replace')!r}"
                    if resp.status < 400:
                        failure += " (redirects are not followed)"
                    if resp.status < 500 and resp.status not in (408, 429):
                        break
            except EgressRefused as exc:
                failure = exc.reason  # DNS now points somewhere refused: no retry
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
        log.error("callback of call %s to %s failed: %s", call.call_id, call.callback_url, failure)
        return False


def _legacy_lane(msg: Msg) -> str:
    """The lane of a call queued before lanes: the one its headers name (``public`` when
    unreadable: the worker then terminates it)."""
    try:
        return lane_of(m.AsyncCall.from_bytes(msg.data).headers)
    except ValidationError:
        return "public"


def call_url(base: str, call: m.AsyncCall) -> URL:
    """The URL of a call's function: ``base``, its checked sub-path and its query.

    Built as an encoded URL, so nothing normalises ``..`` away after the check
    (the sub-path was checked at the gateway; a message on the bus is checked again).

    Raises
    ------
    BadInput
        The sub-path climbs, or the query has characters a URL cannot carry.
    """
    path = safe_subpath(call.path)
    if any(ord(c) < 0x21 or c == "#" for c in call.query):
        raise BadInput("the call's query has spaces, control characters or '#'", field="query")
    text = base + ("/" + path if path else "") + ("?" + call.query if call.query else "")
    return URL(text, encoded=True)


async def run_standalone(settings: GatewaySettings, platform_token: str) -> None:
    """``mxt worker``: one more queue worker beside a running stack, until SIGTERM/SIGINT."""
    import signal

    from gateway import infrastructure
    from gateway.platform import connect_nats

    nc = await connect_nats(settings.nats_url, settings.secrets_path)
    js = nc.jetstream()
    calls = CallStore(await infrastructure.declare(js, settings))
    worker = QueueWorker(settings, js, calls, platform_token)
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await worker.stop()
    await nc.drain()
