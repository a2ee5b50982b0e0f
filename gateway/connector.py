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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError, NotFoundError

from gateway import messages as m
from gateway.calls import CallStore, enqueue
from gateway.infrastructure import ensure_stream, kept_stream
from gateway.provider import LocalProvider

log = logging.getLogger("mxt.gateway.connector")

CONSUMER_PREFIX = "topic_"


@dataclass(frozen=True)
class Binding:
    """One function subscribed to one subject."""

    function: str
    subject: str

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
    ) -> None:
        self.max_body = max_body
        self.js = js
        self.calls = calls
        self.provider = provider
        self.loops: dict[Binding, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None

    def wanted(self) -> set[Binding]:
        """The bindings the deployed functions' ``topic`` annotations ask for."""
        return {
            Binding(name, subject)
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
        try:
            while True:
                try:
                    batch = await sub.fetch(64, timeout=1.0)
                except (FetchTimeoutError, NatsTimeoutError, TimeoutError):
                    continue
                except Exception:  # noqa: BLE001 - NATS reconnecting
                    await asyncio.sleep(0.5)
                    continue
                for msg in batch:
                    await self._forward(binding, f"{stream}-{epoch}", msg)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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
        call = m.AsyncCall(
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
