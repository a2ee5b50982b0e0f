"""Run state in missiondb: the persistence package's runs, tasks, products and log tables.

The orchestrator functions are stateless; everything they know lives in missiondb,
and every transition is an atomic conditional ``UPDATE ... WHERE state = <expected>``
whose row count says whether this caller won it. That is what makes fan-in safe
(two tasks finishing at once dispatch their common downstream task exactly once) and
completion handling idempotent (a redelivered completion changes nothing).

The CALDB files a run resolved when it started are in ``run_caldb_files``, a table
of the migrated schema like the others.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.db.engine import get_engine, reader
from storage.db.models import LogEntry, Observation, Product, Run, RunCaldbFile, Task

TERMINAL_TASK_STATES = ("succeeded", "failed", "cancelled", "skipped")
OPEN_TASK_STATES = ("pending", "dispatched", "running")


def engine() -> sa.Engine:
    """The process's missiondb engine (``MXT_DATABASE_URL``), migrated to head on first use."""
    return get_engine()


def session() -> Session:
    """A new read-only session on missiondb (``storage.db.engine.reader``).

    Writes go through ``records.transaction`` or ``records.claim``.
    """
    return Session(reader(engine()), expire_on_commit=False)


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
