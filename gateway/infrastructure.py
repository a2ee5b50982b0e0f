"""JetStream infrastructure: streams, the worker's consumer and the call-status bucket.

Declared once at start, idempotently (an existing stream keeps its configuration
unless a setting of ours differs, then it is updated), never inline in workers.

Every stream is bounded by age and by bytes (``MXT_STREAM_MAX_BYTES``), and each
message by size (``MXT_STREAM_MAX_MSG_BYTES``): a full stream drops its oldest
messages, except the ``MXT_ASYNC`` work queue, which refuses new calls instead (the
caller gets an error and retries) rather than losing queued ones.
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
from gateway.lanes import LANES, LEGACY_FILTER, lane_durable, lane_filter, parse_slots
from gateway.settings import GatewaySettings

log = logging.getLogger("mxt.gateway.infrastructure")

DAY = 24 * 3600.0
# the streams other packages publish to; the connector consumes them by topic
SHARED_STREAMS: dict[str, list[str]] = {
    m.STORAGE_STREAM: ["mxt.storage.>"],
    m.EVENTS_STREAM: ["mxt.events.>"],
    m.CALLS_STREAM: ["mxt.calls.>"],
}


#: The limits :func:`ensure_stream` brings an existing stream to (when declared).
LIMIT_FIELDS = ("max_age", "max_bytes", "max_msg_size", "discard", "duplicate_window")
#: Room for the JSON envelope around a base64 async body in one message, in bytes.
ENVELOPE_BYTES = 64 * 1024


def kept_stream(
    name: str,
    subjects: list[str],
    days: float,
    dedupe: float,
    max_bytes: int | None = None,
    max_msg_size: int | None = None,
) -> StreamConfig:
    """A limits-retention file stream keeping messages ``days`` days, deduplicating.

    Parameters
    ----------
    name, subjects
        The stream and the subjects it holds.
    days
        Age limit, in days.
    dedupe
        Duplicate window (``Nats-Msg-Id``), in seconds.
    max_bytes
        Bytes the stream may hold before its oldest messages go;
        ``MXT_STREAM_MAX_BYTES`` when omitted.
    max_msg_size
        Largest message accepted, in bytes; ``MXT_STREAM_MAX_MSG_BYTES`` when omitted.
    """
    if max_bytes is None or max_msg_size is None:
        settings = GatewaySettings()
        max_bytes = settings.stream_max_bytes if max_bytes is None else max_bytes
        max_msg_size = settings.stream_max_msg_bytes if max_msg_size is None else max_msg_size
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=dedupe,
        max_age=days * DAY,
        max_bytes=max_bytes,
        max_msg_size=max_msg_size,
        discard=DiscardPolicy.OLD,
    )


def async_message_bytes(settings: GatewaySettings) -> int:
    """Largest message of ``MXT_ASYNC`` and ``MXT_DLQ``, in bytes: at least a base64 body
    of ``MXT_MAX_ASYNC_BODY_BYTES`` in its envelope, else ``MXT_STREAM_MAX_MSG_BYTES``."""
    base64_body = 4 * -(-settings.max_async_body_bytes // 3)
    return max(settings.stream_max_msg_bytes, base64_body + ENVELOPE_BYTES)


def stream_configs(settings: GatewaySettings) -> list[StreamConfig]:
    """The streams of the platform with their retention and byte limits."""
    dedupe = settings.dedupe_window
    size = settings.stream_max_bytes
    message = settings.stream_max_msg_bytes
    return [
        StreamConfig(
            name=m.ASYNC_STREAM,
            subjects=["mxt.async.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=dedupe,
            max_age=settings.call_status_ttl,
            max_bytes=size,
            max_msg_size=async_message_bytes(settings),
            # full: refuse the new call (the caller retries), never drop a queued one
            discard=DiscardPolicy.NEW,
        ),
        kept_stream(m.DLQ_STREAM, ["mxt.dlq.>"], 30, dedupe, size, async_message_bytes(settings)),
        kept_stream(m.CALLS_STREAM, SHARED_STREAMS[m.CALLS_STREAM], 7, dedupe, size, message),
        kept_stream(m.STORAGE_STREAM, SHARED_STREAMS[m.STORAGE_STREAM], 30, dedupe, size, message),
        kept_stream(m.EVENTS_STREAM, SHARED_STREAMS[m.EVENTS_STREAM], 30, dedupe, size, message),
    ]


def _differs(have: object, want: object) -> bool:
    """Whether a stream's current limit differs from the declared one (enums by value)."""
    have = getattr(have, "value", have)
    want = getattr(want, "value", want)
    if isinstance(have, float | int) and isinstance(want, float | int):
        return abs(have - want) > 1e-6
    return have != want


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to the declared subjects and limits.

    An existing stream is updated in place (``update_stream``, never recreated: its
    messages and consumers stay): missing subjects are added, and each limit of
    :data:`LIMIT_FIELDS` the declaration sets (age, bytes, message size, discard
    policy, duplicate window) replaces the stream's own. A smaller ``max_bytes``
    drops the oldest messages beyond it at once.

    Raises
    ------
    nats.js.errors.APIError
        nats-server refused the stream; logged with the limits, since a store too small
        for ``max_bytes`` ("insufficient storage resources") is fixed by a setting.
    """
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except Exception as exc:
            _log_refusal(config, exc)
            raise
        return
    current = info.config
    changed = []
    have = set(current.subjects or [])
    missing = [s for s in config.subjects or [] if s not in have]
    if missing:
        current.subjects = sorted(have | set(missing))
        changed.append("subjects")
    for name in LIMIT_FIELDS:
        wanted = getattr(config, name)
        if wanted is not None and _differs(getattr(current, name), wanted):
            setattr(current, name, wanted)
            changed.append(name)
    if changed:
        log.info("stream %s: updating %s", config.name, ", ".join(changed))
        try:
            await js.update_stream(current)
        except Exception as exc:
            _log_refusal(config, exc)
            raise


def _log_refusal(config: StreamConfig, exc: Exception) -> None:
    """One error line naming the stream, its byte limits and the settings that set them."""
    log.error(
        "stream %s refused by nats-server (max_bytes %s, max_msg_size %s: "
        "MXT_STREAM_MAX_BYTES, MXT_STREAM_MAX_MSG_BYTES): %s",
        config.name,
        config.max_bytes,
        config.max_msg_size,
        exc,
    )


def worker_consumer_config(settings: GatewaySettings, lane: str | None = None) -> ConsumerConfig:
    """The queue worker's durable pull consumer of ``lane`` on ``MXT_ASYNC``.

    ``lane`` ``None``: the consumer from before lanes (``mxt-queue-worker``), now
    filtered to the calls queued then, on ``mxt.async.<function>``.
    ``ack_wait`` is short because the worker sends ``in_progress`` while a call
    runs (or waits for its function's slot); a worker that died lets the call be
    redelivered within that time. ``max_deliver`` is unbounded: the worker counts
    attempts and dead-letters. ``max_ack_pending`` covers what a lane runs and holds.
    """
    slots = parse_slots(settings.lane_slots, settings.worker_concurrency)
    most = slots[lane] if lane else max(slots.values())
    return ConsumerConfig(
        durable_name=lane_durable(lane) if lane else m.WORKER_DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
        filter_subject=lane_filter(lane) if lane else LEGACY_FILTER,
        max_ack_pending=max(1000, most * 8),
    )


async def ensure_worker_consumers(js: JetStreamContext, settings: GatewaySettings) -> None:
    """Declare the lanes' consumers, upgrading the one from before lanes.

    That consumer (``mxt-queue-worker``, filtered ``mxt.async.>``) would overlap the
    lanes' filters, which a work-queue stream refuses: it is deleted and declared again
    on ``mxt.async.*``. Calls it held stay in the stream (a work queue drops a message
    only when acked) and are delivered again by the new one; a call in flight at that
    moment may run twice. A worker of an older version must be stopped first.
    """
    try:
        info = await js.consumer_info(m.ASYNC_STREAM, m.WORKER_DURABLE)
    except NotFoundError:
        info = None
    if info is not None and info.config.filter_subject != LEGACY_FILTER:
        log.info("consumer %s: upgrading to lanes (filter %s)", m.WORKER_DURABLE, LEGACY_FILTER)
        await js.delete_consumer(m.ASYNC_STREAM, m.WORKER_DURABLE)
    await js.add_consumer(m.ASYNC_STREAM, worker_consumer_config(settings))
    for lane in LANES:
        await js.add_consumer(m.ASYNC_STREAM, worker_consumer_config(settings, lane))


async def declare(js: JetStreamContext, settings: GatewaySettings) -> KeyValue:
    """Declare every stream, the worker's consumers and the call-status bucket.

    Returns
    -------
    KeyValue
        The call-status bucket.
    """
    for config in stream_configs(settings):
        await ensure_stream(js, config)
    await ensure_worker_consumers(js, settings)
    return await call_status_bucket(js, settings)


async def call_status_bucket(js: JetStreamContext, settings: GatewaySettings) -> KeyValue:
    """The KV bucket of async call states, created when missing."""
    try:
        return await js.key_value(m.STATUS_BUCKET)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or NotFoundError
        return await js.create_key_value(
            KeyValueConfig(bucket=m.STATUS_BUCKET, history=1, ttl=settings.call_status_ttl)
        )
