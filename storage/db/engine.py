"""Engines, transactions and migrations.

Query functions take a session and never commit; the operation (a function
handler) owns the transaction through :func:`transaction`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.orm import Session, sessionmaker

from bricks.errors import BadInput, Conflict, Transient

MIGRATIONS = Path(__file__).with_name("migrations")
#: how long a SQLite writer waits for another, in milliseconds
SQLITE_BUSY_MS = 30_000
#: execution option of :func:`reader` engines (SQLite: deferred ``BEGIN``)
READ_ONLY_OPTION = "mxt_read_only"


def make_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url``; SQLite in WAL mode with foreign keys enforced.

    SQLite transactions start with ``BEGIN IMMEDIATE``, so two writers queue on the
    busy timeout instead of failing when one upgrades its read lock; those of a
    :func:`reader` start with a plain ``BEGIN`` and never wait for a writer (WAL).
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000}, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def reader(engine: sa.Engine) -> sa.Engine:
    """``engine`` for read-only sessions (same pool).

    On SQLite their transactions take no write lock: a query of the runs page or of a
    run's context never queues behind (nor holds up) the orchestrator's and the log
    sink's writes. A session on it must not write: SQLite refuses to upgrade a
    snapshot another writer has moved past. Other databases are unaffected.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> sa.Engine:
    """The process's engine for ``url`` (default: the settings' database URL).

    For the settings' database, the schema is migrated to head on first use unless
    ``MXT_AUTO_MIGRATE=false``: the embedded stack then needs no separate step, and
    concurrent first uses are serialised (SQLite write lock, PostgreSQL advisory lock).
    """
    if url is not None:
        return make_engine(url)
    from storage.settings import get_settings

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    if settings.auto_migrate:
        _upgrade(engine)
    return engine


@lru_cache(maxsize=8)
def _sessionmaker(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: sa.Engine | None = None, read_only: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error.

    ``read_only`` sessions (queries) run on the :func:`reader` of the engine.

    Raises
    ------
    Transient
        The database is unreachable or busy.
    Conflict
        A constraint was violated (a concurrent insert won the race).
    BadInput
        A value the column cannot hold (out of range, too long).
    """
    engine = engine or get_engine()
    session = _sessionmaker(reader(engine) if read_only else engine)()
    try:
        yield session
        session.commit()
    except exc.DataError as error:
        # a value the column cannot hold that the request models did not catch
        session.rollback()
        raise BadInput(f"a value does not fit the database: {error.orig}") from error
    except exc.IntegrityError as error:
        session.rollback()
        raise Conflict(f"the write conflicts with existing data: {error.orig}") from error
    except (exc.OperationalError, exc.InterfaceError) as error:
        session.rollback()
        raise Transient(f"database unavailable: {error.orig}", retry_after=1.0) from error
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(connection: sa.Connection | None = None) -> Any:
    """An Alembic configuration of our migrations, bound to ``connection`` if given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(url: str | None = None) -> None:
    """Migrate the database at ``url`` (default: the settings') to the latest revision."""
    if url is None:
        _upgrade(get_engine())
        return
    engine = make_engine(url)
    try:
        _upgrade(engine)
    finally:
        engine.dispose()


#: key of the PostgreSQL advisory lock that serialises concurrent migrations
MIGRATION_LOCK = 0x4D58_5400


def _upgrade(engine: sa.Engine) -> None:
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        command.upgrade(alembic_config(connection), "head")
