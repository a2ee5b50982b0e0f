"""The object-store contract, run on the local backend and on a real S3 protocol server."""

from __future__ import annotations

import hashlib
import io

import pytest

from bricks.errors import BadInput, NotFound
from storage.objects import ObjectStore
from storage.s3 import PART_BYTES

HOSTILE_KEYS = [
    "../x",
    "a/../../etc/passwd",
    "/etc/passwd",
    "a\x00b",
    "a\\b",
    "a//b",
    "a/",
    "",
    ".",
    "x/./y",
    "é" * 600,
    "tab\there",
]


def test_put_get_head_roundtrip(store: ObjectStore):
    data = b"SIMPLE  =                    T" * 100
    info = store.put(
        "products",
        "run1/ingest/obs_meta.json",
        data,
        content_type="application/json",
        metadata={"run": "run1"},
    )
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("products", "run1/ingest/obs_meta.json") == data
    head = store.head("products", "run1/ingest/obs_meta.json")
    assert head.size == len(data)
    assert head.sha256 == info.sha256
    assert head.content_type == "application/json"
    assert head.metadata["run"] == "run1"
    assert head.mtime.tzinfo is not None


def test_put_file_like_non_seekable_records_sha(store: ObjectStore):
    class Pipe(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(n)

    payload = bytes(range(256)) * 50_000  # 12.8 MB: multipart on S3
    assert len(payload) > PART_BYTES
    info = store.put("raw", "obs1/l0.fits", Pipe(payload))
    assert info.sha256 == hashlib.sha256(payload).hexdigest()
    streamed = b"".join(store.stream("raw", "obs1/l0.fits", chunk_size=1 << 20))
    assert streamed == payload


def test_overwrite_replaces_whole(store: ObjectStore):
    store.put("raw", "k", b"first version")
    store.put("raw", "k", b"second")
    assert store.get("raw", "k") == b"second"
    assert store.head("raw", "k").size == 6


def test_get_range(store: ObjectStore):
    store.put("logs", "r/log.txt", b"0123456789")
    assert store.get_range("logs", "r/log.txt", 2, 3) == b"234"
    assert store.get_range("logs", "r/log.txt", 8, 10) == b"89"
    assert store.get_range("logs", "r/log.txt", 20, 5) == b""
    with pytest.raises(BadInput):
        store.get_range("logs", "r/log.txt", -1, 2)


def test_missing_object_is_not_found(store: ObjectStore):
    with pytest.raises(NotFound):
        store.get("raw", "nope")
    with pytest.raises(NotFound):
        store.head("raw", "nope")
    with pytest.raises(NotFound):
        store.get_range("raw", "nope", 0, 1)
    assert store.exists("raw", "nope") is False


def test_delete(store: ObjectStore):
    store.put("raw", "gone", b"x")
    assert store.exists("raw", "gone")
    store.delete("raw", "gone")
    assert not store.exists("raw", "gone")
    store.delete("raw", "gone")  # idempotent, as in S3


def test_list_prefix_and_pagination(store: ObjectStore):
    keys = [f"obs{i:02d}/file.fits" for i in range(7)] + ["other/x", "obs", "obs/deep/y"]
    for key in keys:
        store.put("raw", key, key.encode())
    page = store.list("raw", "obs0", limit=3)
    assert [i.key for i in page.items] == ["obs00/file.fits", "obs01/file.fits", "obs02/file.fits"]
    seen = [i.key for i in page.items]
    while page.next_after:
        page = store.list("raw", "obs0", after=page.next_after, limit=3)
        seen += [i.key for i in page.items]
    assert seen == sorted(k for k in keys if k.startswith("obs0"))
    everything = store.list("raw")
    assert sorted(i.key for i in everything.items) == sorted(keys)
    assert all(i.sha256 == hashlib.sha256(i.key.encode()).hexdigest() for i in everything.items)
    assert [i.key for i in store.list("raw", "obs/").items] == ["obs/deep/y"]


def test_key_and_directory_coexist(store: ObjectStore):
    store.put("raw", "a", b"file")
    store.put("raw", "a/b", b"under")
    assert store.get("raw", "a") == b"file"
    assert store.get("raw", "a/b") == b"under"


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_rejected_nothing_written(store: ObjectStore, key: str):
    with pytest.raises(BadInput) as err:
        store.put("raw", key, b"evil")
    assert "key" in err.value.reason
    assert store.list("raw").items == []


def test_unknown_bucket_named(store: ObjectStore):
    with pytest.raises(NotFound, match="unknown bucket 'secret'"):
        store.put("secret", "k", b"x")


@pytest.mark.parametrize(
    "metadata", [{"Bad Name": "x"}, {"ok": "caf\u00e9"}, {"ok": "line\nbreak"}, {"big": "x" * 3000}]
)
def test_bad_metadata_rejected(store: ObjectStore, metadata: dict):
    with pytest.raises(BadInput, match="metadata"):
        store.put("raw", "k", b"x", metadata=metadata)
    assert not store.exists("raw", "k")


def test_sql_looking_key_stored_verbatim(store: ObjectStore):
    key = "obs'; DROP TABLE observations; --/x.fits"
    store.put("raw", key, b"harmless")
    assert store.get("raw", key) == b"harmless"
    assert [i.key for i in store.list("raw").items] == [key]


def test_download_url_serves_object(store: ObjectStore):
    store.put("products", "r/p.png", b"\x89PNG")
    url = store.download_url("products", "r/p.png")
    if store.backend == "s3":
        import urllib.request

        with urllib.request.urlopen(url) as response:  # presigned: no credentials needed
            assert response.read() == b"\x89PNG"
    else:
        assert "/function/objects-download?" in url and "r%2Fp.png" in url


def test_ensure_buckets_idempotent(store: ObjectStore):
    store.put("caldb", "k", b"x")
    store.ensure_buckets()
    assert store.get("caldb", "k") == b"x"
