"""Fixtures of the storage tests: an object store per backend, a migrated database."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.keys import BUCKETS
from storage.local import LocalObjectStore
from storage.objects import ObjectStore
from storage.s3 import S3ObjectStore
from tests.conftest import _postgres_schema_url


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
    if isinstance(backend, S3ObjectStore):
        remove_buckets(backend)


def remove_buckets(store: S3ObjectStore) -> None:
    """Delete a test's buckets, so a shared MinIO or LocalStack does not fill up."""
    for bucket in BUCKETS:
        name = store.bucket_prefix + bucket
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=name)
        for page in pages:
            for entry in page.get("Contents", []):
                store.client.delete_object(Bucket=name, Key=entry["Key"])
        # a killed writer's multipart upload holds the bucket until aborted
        uploads = store.client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for upload in uploads:
            store.client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        store.client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session, copied for each test."""
    from storage.db.engine import upgrade_to_head

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade_to_head(f"sqlite:///{path}")  # disposes its engine: the WAL is checkpointed
    return path


@pytest.fixture(scope="session")
def _postgres_migrated() -> Iterator[str]:
    """A PostgreSQL schema migrated once per session, emptied before each test."""
    from storage.db.engine import upgrade_to_head

    urls = _postgres_schema_url()
    url = next(urls)
    upgrade_to_head(url)
    yield url
    next(urls, None)


def _empty_tables(url: str) -> None:
    import sqlalchemy as sa

    from storage.db.base import Base

    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database at the head migration, on SQLite and on PostgreSQL.

    Migrating once per session and copying (SQLite) or emptying (PostgreSQL) keeps
    the suite fast; ``test_migrations.py`` migrates fresh databases itself.
    """
    if request.param == "sqlite":
        path = tmp_path / "mxt.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_postgres_migrated")
    _empty_tables(url)
    return url


@pytest.fixture()
def engine(migrated_url: str) -> Iterator[sa.Engine]:
    """An engine on the migrated database, disposed after the test."""
    from storage.db.engine import make_engine

    engine = make_engine(migrated_url)
    yield engine
    engine.dispose()
