"""Real faults become Transient (retry), never a crash: S3, the database, NATS."""

from __future__ import annotations

import asyncio

import pytest

from bricks.errors import Transient
from local.natsd import free_port
from storage.db.engine import make_engine, transaction
from storage.events import publish_object_created
from storage.missiondb import get_observation
from storage.objects import ObjectInfo
from storage.s3 import S3ObjectStore


def test_s3_unreachable_is_transient():
    store = S3ObjectStore(f"http://127.0.0.1:{free_port()}", "testing", "testing")
    with pytest.raises(Transient):
        store.put("raw", "k", b"x")
    with pytest.raises(Transient):
        store.head("raw", "k")
    with pytest.raises(Transient):
        store.ensure_buckets()


def test_database_unreachable_is_transient():
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    try:
        with pytest.raises(Transient, match="database unavailable"), transaction(engine) as s:
            get_observation(s, "obs-1")
    finally:
        engine.dispose()


def test_nats_unreachable_is_transient():
    info = ObjectInfo(
        bucket="raw", key="k", size=1, sha256="0" * 64, etag="e", mtime="2026-01-01T00:00:00Z"
    )
    with pytest.raises(Transient, match="NATS"):
        asyncio.run(publish_object_created(f"nats://127.0.0.1:{free_port()}", info))
