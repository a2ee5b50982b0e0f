"""The topic connector: functions whose ``topic`` annotation names NATS subjects are
invoked once per message on them, at-least-once.

Like OpenFaaS's connector-sdk, but durable: each (function, subject) pair has a
JetStream durable pull consumer on the stream holding the subject (``MXT_STORAGE``,
``MXT_EVENTS``, ``MXT_CALLS``, or ``MXT_TOPICS`` which the connector extends to cover
plain core-NATS subjects). Each message becomes a durable async call (call id
``topic-<stream>-<epoch>-<seq>-<function>``, so a redelivered message is enqueued once;
``epoch`` tells a recreated stream from its predecessor) and is
acked once enqueued; the queue worker's retries and dead letters then apply (a message
over the async body limit is terminated with an error in the log). The
request carries the message body and the headers ``X-Topic`` and ``X-Nats-Seq``.

A function annotated ``com.mxt.topic-delivery: direct`` is called by the connector
itself, like OpenFaaS's connector-sdk does, through the queue worker's client: the
message is acked once the function answered 2xx, redelivered by JetStream after a
transient failure (backoff as for async calls, ``MXT_MAX_ATTEMPTS`` deliveries), and
dead-lettered on ``MXT_DLQ`` (then terminated) after a permanent one or the last
attempt. No async call is queued, so no status or completion message is kept: the
orchestrator's ``advance`` is such a function, and a chain hop saves the queue's trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from gateway import messages as m
from gateway.calls import CallStore, enqueue
from gateway.infrastructure import ensure_stream, kept_stream
from gateway.provider import LocalProvider
from gateway.pull import Puller
from gateway.worker import Outcome, QueueWorker, error_reason, retry_delay

log = logging.getLogger("mxt.gateway.connector")

CONSUMER_PREFIX = "topic_"
#: messages a direct binding has in flight at once
DIRECT_CONCURRENCY = 32


@dataclass(frozen=True)
class Binding:
    """One function subscribed to one subject; ``direct``: called by the connector."""

    function: str
    subject: str
    direct: bool = False

    @property
    def durable(self) -> str:
        """The consumer name (durable names allow no dots or wildcards)."""
        digest = hashlib.sha1(self.subject.encode()).hexdigest()[:10]
        return f"{CONSUMER_PREFIX}{self.function}_{digest}"


def content_type_of(body: bytes) -> str:
    """JSON for bodies that look like JSON (S3 events, our events), bytes otherwise."""
    return "application/json" if body[:1] in (b"{", b"[") else "application/octet-stream"


class TopicConnector:
    """Keeps one consumer loop per (function, subject) of the deployed functions."""

    def __init__(
        self,
        js: JetStreamContext,
        calls: CallStore,
        provider: LocalProvider,
        max_body: int = 700 * 1024,
        invoker: QueueWorker | None = None,
    ) -> None:
        self.max_body = max_body
        self.js = js
        self.calls = calls
        self.provider = provider
        self.invoker = invoker
        self.loops: dict[Binding, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None

    def wanted(self) -> set[Binding]:
        """The bindings the deployed functions' ``topic`` annotations ask for.

        Without a queue worker in this process (``MXT_RUN_WORKER=false``), direct
        bindings fall back to queued delivery.
        """
        return {
            Binding(
                name,
                subject,
                self.invoker is not None and deployment.spec.topic_delivery == "direct",
            )
            for name, deployment in self.provider.deployments.items()
            for subject in deployment.spec.topics
        }

    async def start(self) -> None:
        """Bind the current functions and follow later changes."""
        await self.sync()
        self._sync_task = asyncio.create_task(self._follow_changes(), name="topic connector")

    def request_sync(self) -> None:
        """Ask for the bindings to be reconciled (the functions changed)."""
        self._wake.set()

    async def _follow_changes(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - NATS hiccup: the next change retries
                log.exception("topic connector could not reconcile its consumers")

    async def sync(self) -> None:
        """Start loops for new bindings and stop (and delete) those no longer wanted."""
        wanted = self.wanted()
        for binding in set(self.loops) - wanted:
            await self._unbind(binding)
        for binding in wanted - set(self.loops):
            try:
                stream = await self._bind(binding)
            except Exception as exc:  # noqa: BLE001 - one bad subject must not stop others
                log.error("cannot subscribe %s to %r: %s", binding.function, binding.subject, exc)
                continue
            self.loops[binding] = asyncio.create_task(
                self._consume(binding, stream), name=f"topic {binding.durable}"
            )

    async def stream_for(self, subject: str) -> str:
        """The stream holding ``subject``; ``MXT_TOPICS`` is extended when none does."""
        with contextlib.suppress(NotFoundError):
            return await self.js.find_stream_name_by_subject(subject)
        await ensure_stream(self.js, kept_stream(m.TOPICS_STREAM, [subject], 7, 600.0))
        return m.TOPICS_STREAM

    async def _bind(self, binding: Binding) -> str:
        stream = await self.stream_for(binding.subject)
        if stream == m.ASYNC_STREAM:
            raise ValueError("the async work queue cannot be a topic")
        with contextlib.suppress(NotFoundError):
            await self.js.consumer_info(stream, binding.durable)
            return stream
        await self.js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=binding.durable,
                filter_subject=binding.subject,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_deliver=-1,
            ),
        )
        return stream

    async def _unbind(self, binding: Binding) -> None:
        task = self.loops.pop(binding)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            stream = await self.js.find_stream_name_by_subject(binding.subject)
            await self.js.delete_consumer(stream, binding.durable)

    async def _consume(self, binding: Binding, stream: str) -> None:
        # sequences restart when a stream is recreated: its creation time keeps the
        # call ids of the new stream's messages apart from those of the old one
        created = (await self.js.stream_info(stream)).created
        epoch = hashlib.sha1(str(created).encode()).hexdigest()[:6]
        sub = await self.js.pull_subscribe_bind(binding.durable, stream=stream)
        source = f"{stream}-{epoch}"
        puller = Puller(sub)
        inflight: set[asyncio.Task[None]] = set()
        try:
            while True:
                while len(inflight) >= DIRECT_CONCURRENCY:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                # a direct binding fetches only what it can start at once
                size = DIRECT_CONCURRENCY - len(inflight) if binding.direct else 64
                try:
                    batch = await puller.fetch(size)
                except Exception:  # noqa: BLE001 - NATS reconnecting
                    await asyncio.sleep(0.5)
                    continue
                for msg in batch:
                    if binding.direct:
                        task = asyncio.create_task(self._deliver(binding, source, msg))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    else:
                        await self._forward(binding, source, msg)
        finally:
            # stopped: the calls in flight are cancelled and hand their messages back
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _call(self, binding: Binding, source: str, msg: Msg) -> m.AsyncCall:
        """The call a message makes, its id unique to (stream epoch, sequence, function)."""
        seq = msg.metadata.sequence.stream
        return m.AsyncCall(
            call_id=f"topic-{source}-{seq}-{binding.function}",
            function=binding.function,
            headers={
                "Content-Type": (msg.headers or {}).get("Content-Type")
                or content_type_of(msg.data),
                "X-Topic": msg.subject,
                "X-Nats-Seq": str(seq),
            },
            body_b64=m.AsyncCall.encode_body(msg.data),
        )

    async def _deliver(self, binding: Binding, source: str, msg: Msg) -> None:
        """Direct delivery: call the function, then settle the message."""
        assert self.invoker is not None
        call = self._call(binding, source, msg)
        outcome = await self.invoker.invoke_holding(call, msg)
        try:
            await self._settle(call, msg, outcome)
        except Exception:  # noqa: BLE001 - NATS away: JetStream redelivers the message
            log.exception("topic call %s: outcome not settled, left to redelivery", call.call_id)

    async def _settle(self, call: m.AsyncCall, msg: Msg, outcome: Outcome) -> None:
        """Ack a success; nak a transient failure with backoff; dead-letter the rest."""
        assert self.invoker is not None
        if outcome.kind == "ok":
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        reason = error_reason(outcome)
        settings = self.invoker.settings
        if outcome.kind == "transient" and attempt < settings.max_attempts:
            log.warning("topic call %s failed (attempt %d): %s", call.call_id, attempt, reason)
            await msg.nak(delay=retry_delay(attempt, settings, outcome.retry_after))
            return
        log.error("topic call %s dead-lettered after %d attempt(s): %s",
                  call.call_id, attempt, reason)  # fmt: skip
        await self.invoker.dead_letter(call, outcome, reason, attempt)
        await msg.term()

    async def _forward(self, binding: Binding, source: str, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if len(msg.data) > self.max_body:
            # it cannot travel as an async call: redelivering it would loop for ever
            log.error(
                "topic message %s/%d for %s dropped: %d bytes, over the async limit of %d",
                source, seq, binding.function, len(msg.data), self.max_body,
            )  # fmt: skip
            await msg.term()
            return
        call = self._call(binding, source, msg)
        try:
            await enqueue(self.js, self.calls, call)
        except Exception:  # noqa: BLE001 - not acked: JetStream redelivers it
            log.exception("topic message %s/%d not enqueued", source, seq)
            await msg.nak(delay=1.0)
            return
        await msg.ack()

    async def stop(self) -> None:
        """Stop every consumer loop (the durable consumers stay for the next start)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        for task in self.loops.values():
            task.cancel()
        await asyncio.gather(*self.loops.values(), return_exceptions=True)
        self.loops.clear()
