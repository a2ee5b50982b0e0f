"""Object-created events on NATS JetStream, in the shape MinIO publishes itself.

A MinIO configured with a NATS notification target (see ``docs/storage.md``) sends
exactly this message when an object lands in a bucket; the local backend has no
server to do it, so whoever performs the upload calls :func:`publish_object_created`.
Consumers therefore read one shape whatever the deployment.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bricks.errors import Transient
from storage.objects import ObjectInfo
from storage.settings import positive_env

STREAM = "MXT_STORAGE"
STREAM_SUBJECTS = ["mxt.storage.>"]
EVENT_NAME = "s3:ObjectCreated:Put"
#: how long a publisher waits for NATS to accept a connection, in seconds
CONNECT_SECONDS = 5.0


def subject_for(bucket: str) -> str:
    """The subject of a bucket's events: ``mxt.storage.<bucket>``."""
    return f"mxt.storage.{bucket}"


def message_id(info: ObjectInfo) -> str:
    """``Nats-Msg-Id``: the same content re-uploaded under the same key is one event."""
    return f"{info.bucket}/{info.key}@{info.sha256 or info.etag}"


def object_created_event(info: ObjectInfo, event_time: datetime | None = None) -> dict[str, Any]:
    """The MinIO notification record for ``info`` (``EventName``, ``Key``, ``Records``).

    As MinIO does, ``Key`` is ``<bucket>/<key>`` and ``s3.object.key`` is URL-encoded.
    """
    when = (event_time or datetime.now(UTC)).astimezone(UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    sequencer = f"{int(when.timestamp() * 1e9):016X}"
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": stamp,
        "eventName": EVENT_NAME,
        "userIdentity": {"principalId": "mxt"},
        "requestParameters": {"principalId": "mxt", "region": "", "sourceIPAddress": ""},
        "responseElements": {
            "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
            "x-minio-origin-endpoint": "",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": info.bucket,
                "ownerIdentity": {"principalId": "mxt"},
                "arn": f"arn:aws:s3:::{info.bucket}",
            },
            "object": {
                "key": quote(info.key, safe="/"),
                "size": info.size,
                "eTag": info.etag,
                "contentType": info.content_type,
                "userMetadata": {
                    **{f"X-Amz-Meta-{k.title()}": v for k, v in info.metadata.items()},
                    "content-type": info.content_type,
                },
                "sequencer": sequencer,
            },
        },
        "source": {"host": "", "port": "", "userAgent": "mxt"},
    }
    return {"EventName": EVENT_NAME, "Key": f"{info.bucket}/{info.key}", "Records": [record]}


#: Age limit of ``MXT_STORAGE``, in seconds, and its duplicate window (as the gateway's).
STREAM_MAX_AGE = 30 * 24 * 3600.0
STREAM_DEDUPE_WINDOW = 600.0
#: Defaults of ``MXT_STREAM_MAX_BYTES`` and ``MXT_STREAM_MAX_MSG_BYTES``, in bytes (the
#: gateway's settings have the same; ``gateway.infrastructure`` declares the stream too).
DEFAULT_STREAM_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_STREAM_MAX_MSG_BYTES = 1024 * 1024


def storage_stream_config() -> Any:
    """The ``MXT_STORAGE`` stream as the gateway declares it: 30 days, bounded in bytes.

    ``max_bytes`` and ``max_msg_size`` come from ``MXT_STREAM_MAX_BYTES`` and
    ``MXT_STREAM_MAX_MSG_BYTES`` (bytes); the oldest events go first when it is full.

    Raises
    ------
    ValueError
        One of those variables is not a positive integer (naming it).
    """
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=STREAM,
        subjects=STREAM_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=STREAM_DEDUPE_WINDOW,
        max_age=STREAM_MAX_AGE,
        max_bytes=positive_env("MXT_STREAM_MAX_BYTES", DEFAULT_STREAM_MAX_BYTES),
        max_msg_size=positive_env("MXT_STREAM_MAX_MSG_BYTES", DEFAULT_STREAM_MAX_MSG_BYTES),
        discard=DiscardPolicy.OLD,
    )


async def ensure_storage_stream(js: Any) -> None:
    """Declare the ``MXT_STORAGE`` stream (subjects ``mxt.storage.>``) if absent, bounded
    as :func:`storage_stream_config` says (an existing one is the gateway's to update)."""
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(storage_stream_config())


async def publish_object_created(nats_url: str, info: ObjectInfo) -> None:
    """Publish the MinIO-shaped event for ``info`` on ``mxt.storage.<bucket>``, with ack.

    Raises
    ------
    Transient
        When NATS is unreachable or JetStream does not acknowledge.
    """
    from nats.errors import Error as NatsError

    from gateway.natsconn import connect, url_without_credentials

    body = json.dumps(object_created_event(info)).encode()
    try:
        # nats-py retries a refused first connection forever unless told otherwise
        nc = await asyncio.wait_for(
            connect(nats_url, connect_timeout=2, allow_reconnect=False), CONNECT_SECONDS
        )
    except (OSError, NatsError, TimeoutError) as exc:
        where = url_without_credentials(nats_url)
        raise Transient(f"cannot reach NATS at {where}: {exc}") from exc
    try:
        js = nc.jetstream()
        await ensure_storage_stream(js)
        await js.publish(
            subject_for(info.bucket), body, headers={"Nats-Msg-Id": message_id(info)}, timeout=5
        )
    except (OSError, NatsError, TimeoutError) as exc:
        raise Transient(f"cannot publish the object-created event: {exc}") from exc
    finally:
        await nc.close()
