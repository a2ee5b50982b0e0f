"""Large objects stream with bounded memory; a killed writer leaves nothing visible."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from storage.local import LocalObjectStore
from storage.objects import ObjectStore

SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
RSS_LIMIT = 64 * 1024 * 1024


class GeneratedData(io.RawIOBase):
    """200 MB of deterministic bytes produced chunk by chunk, never whole in memory."""

    def __init__(self, size: int, sampler: list[int]) -> None:
        self.remaining = size
        self.counter = 0
        self.digest = hashlib.sha256()
        self.sampler = sampler

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        out = bytearray()
        while len(out) < n:
            block = hashlib.sha256(self.counter.to_bytes(8, "little")).digest() * 2048
            self.counter += 1
            out += block[: n - len(out)]
        self.remaining -= n
        self.digest.update(out)
        self.sampler.append(psutil.Process().memory_info().rss)
        return bytes(out)


def test_200mb_roundtrip_bounded_memory(store: ObjectStore):
    process = psutil.Process()
    baseline = process.memory_info().rss
    samples: list[int] = []
    source = GeneratedData(SIZE, samples)
    info = store.put("raw", "big/l0.fits", source)
    expected = source.digest.hexdigest()
    assert info.size == SIZE
    assert info.sha256 == expected
    digest = hashlib.sha256()
    read = 0
    for chunk in store.stream("raw", "big/l0.fits", chunk_size=CHUNK):
        digest.update(chunk)
        read += len(chunk)
        samples.append(process.memory_info().rss)
    assert read == SIZE
    assert digest.hexdigest() == expected
    growth = max(samples) - baseline
    assert growth < RSS_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


def _run_killed_writer(args: list[str]) -> None:
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("writer_child.py")), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "midway"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_killed_writer_leaves_no_object(store: ObjectStore, tmp_path: Path):
    if isinstance(store, LocalObjectStore):
        _run_killed_writer(["local", str(store.root)])
        leftovers = list((store.root / ".tmp").iterdir())
        assert leftovers, "the child should have been killed mid-write"
    else:
        _run_killed_writer(["s3", store.client.meta.endpoint_url, store.bucket_prefix])
    assert not store.exists("raw", "obs/partial.fits")
    assert store.list("raw").items == []
    # the key stays writable after the crash
    store.put("raw", "obs/partial.fits", b"complete")
    assert store.get("raw", "obs/partial.fits") == b"complete"
