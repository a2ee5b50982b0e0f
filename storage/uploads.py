"""Uploads of raw data: store the object, then announce it on NATS as MinIO would."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from storage.events import publish_object_created
from storage.http import parse_params
from storage.objects import ObjectInfo, ObjectStore
from storage.schemas import StrictModel
from storage.settings import get_settings

#: buckets that accept uploads through the functions (products are written by bricks)
UPLOAD_BUCKETS = ("raw",)


class UploadParams(StrictModel):
    """Query parameters of objects-upload."""

    key: str = Field(max_length=1024)
    bucket: Literal["raw"] = "raw"


class DownloadParams(StrictModel):
    """Parameters of objects-download."""

    bucket: Literal["raw", "products", "caldb", "logs"]
    key: str = Field(max_length=1024)


class UploadResult(ObjectInfo):
    """The stored object, and whether its object-created event was published."""

    event_published: bool


def should_publish(store: ObjectStore) -> bool:
    """Whether this process publishes object-created events itself.

    A local store has no server to do it; with S3, MinIO publishes (see
    docs/storage.md) unless ``MXT_PUBLISH_STORAGE_EVENTS`` says otherwise.
    """
    override = get_settings().publish_storage_events
    if override is not None:
        return override
    return store.backend == "local"


async def receive_upload(
    store: ObjectStore, body: bytes, content_type: str | None, query: dict[str, Any]
) -> UploadResult:
    """Store ``body`` under the key named in ``query``, then publish the event.

    Raises
    ------
    BadInput
        A parameter or the key is invalid (nothing stored).
    Transient
        Storage or NATS failed; a retry is safe (same content, same event id).
    """
    params = parse_params(UploadParams, query)
    info = await asyncio.to_thread(
        store.put,
        params.bucket,
        params.key,
        body,
        content_type=content_type or "application/octet-stream",
    )
    nats_url = get_settings().nats_url
    published = bool(nats_url) and should_publish(store)
    if published:
        await publish_object_created(nats_url, info)  # type: ignore[arg-type]
    return UploadResult(**info.model_dump(), event_published=published)
