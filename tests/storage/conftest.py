"""Fixtures of the storage tests: an object store per backend, a migrated database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.local import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore


def s3_store(endpoint: str) -> S3ObjectStore:
    """A store on ``endpoint`` with buckets of its own (a unique prefix per test)."""
    return S3ObjectStore(
        endpoint_url=endpoint,
        access_key=os.environ.get("MXT_TEST_S3_ACCESS_KEY", "testing"),
        secret_key=os.environ.get("MXT_TEST_S3_SECRET_KEY", "testing"),
        bucket_prefix=f"t{uuid.uuid4().hex[:10]}-",
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An object store with the system's buckets, on each backend."""
    if request.param == "local":
        backend: ObjectStore = LocalObjectStore(tmp_path / "objects")
    else:
        backend = s3_store(request.getfixturevalue("s3_endpoint"))
    backend.ensure_buckets()
    yield backend


@pytest.fixture()
def migrated_url(database_url: str) -> str:
    """The database of ``database_url``, upgraded to the head migration."""
    from storage.db.engine import upgrade_to_head

    upgrade_to_head(database_url)
    return database_url
