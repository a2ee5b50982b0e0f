"""Local-directory object store: the embedded default.

Layout under the root, per bucket::

    <bucket>/.blobs/<uuid>          the data, written once, never modified
    <bucket>/.index/d_<seg>/f_<seg> a JSON sidecar per key naming its blob

A put writes the blob to ``.tmp/`` (fsync), renames it into ``.blobs/``, then writes
the sidecar to ``.tmp/`` (fsync) and renames it into ``.index/``: that rename is the
commit. A writer killed at any point leaves at most an unreferenced temporary file
or blob, never a visible partial object, and a sidecar is never visible before its
data. Directory segments are prefixed ``d_`` and file names ``f_`` so that keys
``a`` and ``a/b`` can coexist, as they do in S3.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bricks.errors import BadInput, NotFound, Transient
from storage.keys import BUCKETS, validate_bucket, validate_key, validate_metadata, validate_prefix
from storage.objects import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    HashedSource,
    ObjectData,
    ObjectInfo,
    ObjectPage,
    ObjectStore,
)

#: temporary files older than this are leftovers of killed writers, in seconds
STALE_TEMP_SECONDS = 3600


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root``, with atomic writes.

    Parameters
    ----------
    root
        Directory holding one sub-directory per bucket.
    """

    backend = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------
    def _bucket_dir(self, bucket: str) -> Path:
        path = self.root / validate_bucket(bucket)
        if not path.is_dir():
            raise NotFound(f"bucket {bucket!r} does not exist (ensure_buckets not run?)")
        return path

    def _sidecar(self, bucket: str, key: str) -> Path:
        segments = validate_key(key).split("/")
        parts = [f"d_{s}" for s in segments[:-1]] + [f"f_{segments[-1]}"]
        return self._bucket_dir(bucket).joinpath(".index", *parts)

    def _tmp(self) -> Path:
        return self.root / ".tmp" / uuid.uuid4().hex

    # -- interface -----------------------------------------------------------------
    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> None:
        """Create the bucket directories and purge stale temporary files."""
        with _io_errors("create buckets"):
            (self.root / ".tmp").mkdir(parents=True, exist_ok=True)
            for bucket in buckets:
                base = self.root / validate_bucket(bucket)
                (base / ".blobs").mkdir(parents=True, exist_ok=True)
                (base / ".index").mkdir(parents=True, exist_ok=True)
            self._purge_stale_temporaries()

    def _purge_stale_temporaries(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in (self.root / ".tmp").iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def put(
        self,
        bucket: str,
        key: str,
        data: ObjectData,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Write the blob, then commit the sidecar; see the module docstring."""
        sidecar = self._sidecar(bucket, key)
        metadata = validate_metadata(metadata)
        blob_name = uuid.uuid4().hex
        blob = self._bucket_dir(bucket) / ".blobs" / blob_name
        with _io_errors(f"write {bucket}/{key}"):
            size, sha256 = _write_blob(data, self._tmp(), blob)
            info = ObjectInfo(
                bucket=bucket,
                key=key,
                size=size,
                sha256=sha256,
                etag=sha256[:32],
                content_type=content_type,
                metadata={**metadata, "sha256": sha256},
                mtime=datetime.now(UTC),
            )
            previous = _read_sidecar(sidecar)
            record = {"blob": blob_name, **info.model_dump(mode="json")}
            _mkdirs(sidecar.parent)
            _write_atomically(json.dumps(record).encode(), self._tmp(), sidecar)
            if previous and previous["blob"] != blob_name:
                (blob.parent / previous["blob"]).unlink(missing_ok=True)
        return info

    def _open_blob(self, bucket: str, key: str) -> tuple[dict, object]:
        # an overwrite may delete the blob between reading the sidecar and opening
        # it; the new sidecar is then already committed, so one retry suffices
        for _ in range(3):
            record = self._record(bucket, key)
            try:
                path = self._bucket_dir(bucket) / ".blobs" / record["blob"]
                return record, path.open("rb")
            except FileNotFoundError:
                continue
        raise Transient(f"object {bucket}/{key} is being rewritten; retry", retry_after=0.1)

    def _record(self, bucket: str, key: str) -> dict:
        sidecar = self._sidecar(bucket, key)
        with _io_errors(f"read {bucket}/{key}"):
            record = _read_sidecar(sidecar)
        if record is None:
            raise NotFound(f"object {bucket}/{key} not found", bucket=bucket, key=key)
        return record

    def stream(self, bucket: str, key: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Chunks read from the blob; the open file survives a concurrent overwrite."""
        _, handle = self._open_blob(bucket, key)
        return _iter_file(handle, chunk_size)

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of the object."""
        if start < 0 or length < 0:
            raise BadInput("range start and length must be non-negative")
        _, handle = self._open_blob(bucket, key)
        with handle, _io_errors(f"read {bucket}/{key}"):  # type: ignore[attr-defined]
            handle.seek(start)  # type: ignore[attr-defined]
            return handle.read(length)  # type: ignore[attr-defined]

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """The sidecar's record."""
        record = self._record(bucket, key)
        record.pop("blob")
        return ObjectInfo.model_validate(record)

    def list(
        self, bucket: str, prefix: str = "", *, after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """Walk the index under the prefix's directory part, sort, page."""
        validate_prefix(prefix)
        limit = max(1, min(limit, 1000))
        index = self._bucket_dir(bucket) / ".index"
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = index.joinpath(*[f"d_{s}" for s in directory.split("/") if s])
        with _io_errors(f"list {bucket}/{prefix}"):
            keys = sorted(
                k
                for k in _walk_keys(start, directory)
                if k.startswith(prefix) and (after is None or k > after)
            )
        items = []
        for key in keys[:limit]:
            try:
                items.append(self.head(bucket, key))
            except NotFound:  # deleted while listing
                continue
        next_after = keys[limit - 1] if len(keys) > limit else None
        return ObjectPage(items=items, next_after=next_after)

    def delete(self, bucket: str, key: str) -> None:
        """Remove the sidecar (the object disappears at once), then its blob."""
        sidecar = self._sidecar(bucket, key)
        with _io_errors(f"delete {bucket}/{key}"):
            record = _read_sidecar(sidecar)
            if record is None:
                return
            sidecar.unlink(missing_ok=True)
            (self._bucket_dir(bucket) / ".blobs" / record["blob"]).unlink(missing_ok=True)


@contextmanager
def _io_errors(action: str) -> Iterator[None]:
    """Map OS errors to the taxonomy: names too long are bad input, others transient."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # a key segment longer than the file system allows
            raise BadInput(f"cannot {action}: a key segment is too long") from exc
        raise Transient(f"cannot {action}: {exc.strerror or exc}") from exc


def _mkdirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise BadInput(f"key collides with the store's layout at {path.name!r}") from exc


def _write_blob(data: ObjectData, tmp: Path, blob: Path) -> tuple[int, str]:
    """Stream ``data`` into ``tmp`` while hashing, fsync, rename to ``blob``."""
    if isinstance(data, bytes | bytearray | memoryview):
        with HashedSource(data) as source:
            _write_atomically(bytes(data), tmp, blob)
            return source.size, source.sha256
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            while chunk := data.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, blob)
    finally:
        tmp.unlink(missing_ok=True)
    return size, digest.hexdigest()


def _write_atomically(payload: bytes, tmp: Path, target: Path) -> None:
    try:
        with tmp.open("wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None


def _iter_file(handle: object, chunk_size: int) -> Iterator[bytes]:
    with handle:  # type: ignore[attr-defined]
        while chunk := handle.read(chunk_size):  # type: ignore[attr-defined]
            yield chunk


def _walk_keys(directory: Path, key_prefix: str) -> Iterator[str]:
    """Keys under an index directory, rebuilt from the ``d_``/``f_`` names."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        joined = f"{key_prefix}/{entry.name[2:]}" if key_prefix else entry.name[2:]
        if entry.name.startswith("d_") and entry.is_dir():
            yield from _walk_keys(Path(entry.path), joined)
        elif entry.name.startswith("f_"):
            yield joined
