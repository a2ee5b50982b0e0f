"""Run state in missiondb: the persistence package's runs, tasks, products and log tables.

The orchestrator functions are stateless; everything they know lives in missiondb,
and every transition is an atomic conditional ``UPDATE ... WHERE state = <expected>``
whose row count says whether this caller won it. That is what makes fan-in safe
(two tasks finishing at once dispatch their common downstream task exactly once) and
completion handling idempotent (a redelivered completion changes nothing).

One table is the orchestrator's own: the CALDB files a run resolved when it started
(``run_caldb_files``), created idempotently beside the migrated schema.
"""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from storage.db.engine import get_engine
from storage.db.models import LogEntry, Observation, Product, Run, Task

TERMINAL_TASK_STATES = ("succeeded", "failed", "cancelled", "skipped")
OPEN_TASK_STATES = ("pending", "dispatched", "running")


class _OrchestratorBase(DeclarativeBase):
    """Tables of the orchestrator's own, outside the persistence package's migrations."""


class RunCaldbFile(_OrchestratorBase):
    """One CALDB file a run uses: resolved once at the start, read at every dispatch."""

    __tablename__ = "run_caldb_files"

    run_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    codename: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    bucket: Mapped[str] = mapped_column(sa.String(16))
    key: Mapped[str] = mapped_column(sa.String(1024))
    sha256: Mapped[str | None] = mapped_column(sa.String(64))


@cache
def _tables_ready(engine: sa.Engine) -> bool:
    """Migrate an empty database (a first start) and add the orchestrator's table."""
    if not sa.inspect(engine).has_table("runs"):
        from storage.db.engine import upgrade_to_head

        upgrade_to_head(engine.url.render_as_string(hide_password=False))
    _OrchestratorBase.metadata.create_all(engine, checkfirst=True)
    return True


def engine() -> sa.Engine:
    """The process's missiondb engine (``MXT_DATABASE_URL``), with our table present."""
    current = get_engine()
    _tables_ready(current)
    return current


def session() -> Session:
    """A new session on missiondb; the caller owns the transaction."""
    return Session(engine(), expire_on_commit=False)


def task_id_of(run_id: str, brick: str) -> str:
    """The missiondb task id of a brick of a run: ``<run_id>.<brick>``."""
    return f"{run_id}.{brick}"


__all__ = [
    "OPEN_TASK_STATES",
    "TERMINAL_TASK_STATES",
    "LogEntry",
    "Observation",
    "Product",
    "Run",
    "RunCaldbFile",
    "Task",
    "engine",
    "session",
    "task_id_of",
]
