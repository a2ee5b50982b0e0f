"""JetStream infrastructure: streams, the worker's consumer and the call-status bucket.

Declared once at start, idempotently (an existing stream keeps its configuration
unless a setting of ours differs, then it is updated), never inline in workers.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from gateway import messages as m
from gateway.settings import GatewaySettings

log = logging.getLogger("mxt.gateway.infrastructure")

DAY = 24 * 3600.0
# the streams other packages publish to; the connector consumes them by topic
SHARED_STREAMS: dict[str, list[str]] = {
    m.STORAGE_STREAM: ["mxt.storage.>"],
    m.EVENTS_STREAM: ["mxt.events.>"],
    m.CALLS_STREAM: ["mxt.calls.>"],
}


def kept_stream(name: str, subjects: list[str], days: float, dedupe: float) -> StreamConfig:
    """A limits-retention file stream keeping messages ``days`` days, deduplicating."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=dedupe,
        max_age=days * DAY,
        discard=DiscardPolicy.OLD,
    )


def stream_configs(settings: GatewaySettings) -> list[StreamConfig]:
    """The streams of the platform with their retention."""
    dedupe = settings.dedupe_window
    return [
        StreamConfig(
            name=m.ASYNC_STREAM,
            subjects=["mxt.async.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=dedupe,
            max_age=settings.call_status_ttl,
        ),
        kept_stream(m.DLQ_STREAM, ["mxt.dlq.>"], 30, dedupe),
        kept_stream(m.CALLS_STREAM, SHARED_STREAMS[m.CALLS_STREAM], 7, dedupe),
        kept_stream(m.STORAGE_STREAM, SHARED_STREAMS[m.STORAGE_STREAM], 30, dedupe),
        kept_stream(m.EVENTS_STREAM, SHARED_STREAMS[m.EVENTS_STREAM], 30, dedupe),
    ]


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or leave an existing one as another component declared it.

    A stream declared first by another package (the orchestrator's events, say)
    keeps its limits; only a missing subject is added.
    """
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    have = set(info.config.subjects or [])
    missing = [s for s in config.subjects or [] if s not in have]
    if missing:
        info.config.subjects = sorted(have | set(missing))
        await js.update_stream(info.config)


def worker_consumer_config(settings: GatewaySettings) -> ConsumerConfig:
    """The queue worker's durable pull consumer on ``MXT_ASYNC``.

    ``ack_wait`` is short because the worker sends ``in_progress`` while a call
    runs; a worker that died lets the call be redelivered within that time.
    ``max_deliver`` is unbounded: the worker counts attempts and dead-letters.
    """
    return ConsumerConfig(
        durable_name=m.WORKER_DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
        filter_subject="mxt.async.>",
        max_ack_pending=max(1000, settings.worker_concurrency * 4),
    )


async def declare(js: JetStreamContext, settings: GatewaySettings) -> KeyValue:
    """Declare every stream, the worker's consumer and the call-status bucket.

    Returns
    -------
    KeyValue
        The call-status bucket.
    """
    for config in stream_configs(settings):
        await ensure_stream(js, config)
    await js.add_consumer(m.ASYNC_STREAM, worker_consumer_config(settings))
    return await call_status_bucket(js, settings)


async def call_status_bucket(js: JetStreamContext, settings: GatewaySettings) -> KeyValue:
    """The KV bucket of async call states, created when missing."""
    try:
        return await js.key_value(m.STATUS_BUCKET)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or NotFoundError
        return await js.create_key_value(
            KeyValueConfig(bucket=m.STATUS_BUCKET, history=1, ttl=settings.call_status_ttl)
        )
