"""The object store interface, shared by the local-directory and S3 backends.

Every object records its size (bytes) and sha256 (hex) in its metadata, computed
while the data streams through, so a reader can verify what it got.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import BinaryIO
from urllib.parse import urlencode

from pydantic import BaseModel, Field

from storage.keys import BUCKETS
from storage.settings import get_settings

#: size of the chunks streamed in and out, in bytes
CHUNK_BYTES = 1024 * 1024
#: above this, a put spools to a temporary file instead of memory, in bytes
SPOOL_BYTES = 8 * 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
SHA256_METADATA = "sha256"

ObjectData = bytes | bytearray | memoryview | BinaryIO


class ObjectInfo(BaseModel):
    """What ``head`` returns: an object's identity and metadata."""

    bucket: str
    key: str
    size: int = Field(description="bytes")
    sha256: str | None = Field(description="hex digest; None for objects written by others")
    etag: str
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: dict[str, str] = Field(default_factory=dict)
    mtime: datetime


class ObjectPage(BaseModel):
    """One page of a listing, in key order; ``next_after`` continues it."""

    items: list[ObjectInfo]
    next_after: str | None = None


class HashedSource:
    """A data source prepared for upload: a seekable file, its size and sha256.

    Bytes are wrapped as they are; a seekable file is hashed in a first pass and
    rewound; anything else is spooled (memory up to ``SPOOL_BYTES``, then a
    temporary file) while hashing, so memory stays bounded whatever the size.
    """

    def __init__(self, data: ObjectData) -> None:
        self._owned: BinaryIO | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            self.file: BinaryIO = io.BytesIO(raw)
            self.size = len(raw)
            self.sha256 = hashlib.sha256(raw).hexdigest()
            return
        if _seekable(data):
            start = data.tell()
            self.size, self.sha256 = _hash_stream(data, None)
            data.seek(start)
            self.file = data
            return
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed in close()
        self.size, self.sha256 = _hash_stream(data, spool)
        spool.seek(0)
        self.file = self._owned = spool  # type: ignore[assignment]

    def close(self) -> None:
        """Release the spool, if one was made."""
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> HashedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _seekable(data: BinaryIO) -> bool:
    try:
        return bool(data.seekable())
    except (AttributeError, ValueError):
        return False


def _hash_stream(source: BinaryIO, copy_to: BinaryIO | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return size, digest.hexdigest()


class ObjectStore(ABC):
    """Buckets of objects addressed by validated keys.

    Missing objects raise ``bricks.errors.NotFound``; storage faults raise
    ``bricks.errors.Transient``; invalid keys, buckets or metadata raise ``BadInput``.
    """

    backend: str = "abstract"

    @abstractmethod
    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> None:
        """Create the system's buckets if they do not exist (idempotent)."""

    @abstractmethod
    def put(
        self,
        bucket: str,
        key: str,
        data: ObjectData,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` (bytes or a binary file, streamed) under ``key``; replace any old one.

        The object becomes visible whole or not at all.
        """

    @abstractmethod
    def stream(self, bucket: str, key: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes as an iterator of chunks of at most ``chunk_size`` bytes."""

    @abstractmethod
    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from byte offset ``start`` (fewer at the end of the object)."""

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo:
        """Size, sha256, content type, user metadata and modification time."""

    @abstractmethod
    def list(
        self, bucket: str, prefix: str = "", *, after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """Objects whose key starts with ``prefix``, in key order, after key ``after``."""

    @abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Remove the object; deleting a missing object is not an error (as in S3)."""

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object in memory: for small objects only."""
        return b"".join(self.stream(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object exists."""
        from bricks.errors import NotFound

        try:
            self.head(bucket, key)
        except NotFound:
            return False
        return True

    def download_to(self, bucket: str, key: str, target: BinaryIO) -> int:
        """Stream the object into ``target``; return the number of bytes written."""
        written = 0
        for chunk in self.stream(bucket, key):
            target.write(chunk)
            written += len(chunk)
        return written

    def download_url(self, bucket: str, key: str, expires: int = 3600) -> str:
        """A URL that serves the object: the gateway's ``objects-download`` function.

        S3 overrides this with a presigned URL valid ``expires`` seconds.
        """
        query = urlencode({"bucket": bucket, "key": key})
        return f"{get_settings().gateway_url.rstrip('/')}/function/objects-download?{query}"


def make_store(backend: str | None = None) -> ObjectStore:
    """Build a store from the settings (``MXT_OBJECT_STORE``: ``local`` or ``s3``)."""
    settings = get_settings()
    backend = backend or settings.object_store
    if backend == "s3":
        from storage.s3 import S3ObjectStore

        return S3ObjectStore.from_settings(settings)
    from storage.local import LocalObjectStore

    return LocalObjectStore(settings.data_dir / "objects")


@lru_cache(maxsize=1)
def get_store() -> ObjectStore:
    """The process's one object store, built on first use, buckets ensured."""
    store = make_store()
    store.ensure_buckets()
    return store
