"""The tables of configdb, missiondb and caldb (one metadata, one migration history).

Public identifiers (``obs_id``, ``run_id``, ``task_id``, ``call_id``) are strings
chosen by the callers, unique, and used as foreign keys, so that the orchestrator
never needs the integer primary keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from storage.db.base import Base, utcnow

PROGRAMMES = ("GP", "CP", "ToO")
RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")
TASK_STATES = ("pending", "dispatched", "running", "succeeded", "failed", "cancelled", "skipped")
CALL_STATES = ("queued", "running", "succeeded", "failed", "dead")
#: SQLite autoincrements only INTEGER PRIMARY KEY; PostgreSQL gets 64 bits
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ID_LENGTH = 128
KEY_LENGTH = 1024


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# -- configdb -------------------------------------------------------------------------
class ProgrammeConfig(Base):
    """One immutable version of a programme's pipeline: its DAG and parameters."""

    __tablename__ = "programme_configs"
    __table_args__ = (
        sa.UniqueConstraint("programme", "version"),
        sa.CheckConstraint(_in("programme", PROGRAMMES), name="programme"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    programme: Mapped[str] = mapped_column(sa.String(8))
    version: Mapped[int]
    dag: Mapped[list] = mapped_column(sa.JSON())
    parameters: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    #: sha256 of the canonical JSON of (dag, parameters): makes a put idempotent
    content_sha256: Mapped[str] = mapped_column(sa.String(64))
    comment: Mapped[str] = mapped_column(sa.Text(), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ActiveConfig(Base):
    """The one active version of each programme (the primary key makes it one)."""

    __tablename__ = "active_configs"

    programme: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    config_id: Mapped[int] = mapped_column(sa.ForeignKey("programme_configs.id"))
    activated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConfigActivation(Base):
    """History of activations, newest last."""

    __tablename__ = "config_activations"

    id: Mapped[int] = mapped_column(primary_key=True)
    programme: Mapped[str] = mapped_column(sa.String(8), index=True)
    version: Mapped[int]
    config_id: Mapped[int] = mapped_column(sa.ForeignKey("programme_configs.id"))
    activated_at: Mapped[datetime] = mapped_column(default=utcnow)
    comment: Mapped[str] = mapped_column(sa.Text(), default="")


# -- missiondb ------------------------------------------------------------------------
class Observation(Base):
    """An observation whose raw data arrived."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(primary_key=True)
    obs_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    programme: Mapped[str | None] = mapped_column(sa.String(8), index=True)
    object_name: Mapped[str | None] = mapped_column(sa.String(128))
    ra: Mapped[float | None] = mapped_column(sa.Float(), doc="degrees")
    dec: Mapped[float | None] = mapped_column(sa.Float(), doc="degrees")
    tstart: Mapped[datetime | None]
    tstop: Mapped[datetime | None]
    burst_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), index=True)
    trigger_time: Mapped[datetime | None]
    raw_bucket: Mapped[str] = mapped_column(sa.String(16), default="raw")
    raw_key: Mapped[str] = mapped_column(sa.String(KEY_LENGTH))
    raw_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One execution of a programme's pipeline on an observation."""

    __tablename__ = "runs"
    __table_args__ = (sa.CheckConstraint(_in("state", RUN_STATES), name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    obs_id: Mapped[str | None] = mapped_column(sa.ForeignKey("observations.obs_id"), index=True)
    programme: Mapped[str] = mapped_column(sa.String(8))
    config_version: Mapped[int | None]
    caldb_version: Mapped[str | None] = mapped_column(sa.String(32))
    caldb_date: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    reason: Mapped[str | None] = mapped_column(sa.Text())
    parent_run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Task(Base):
    """One brick of a run."""

    __tablename__ = "tasks"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "brick"),
        sa.CheckConstraint(_in("state", TASK_STATES), name="state"),
        sa.Index("ix_tasks_run_id_state", "run_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.run_id"))
    brick: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    call_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text())


class Product(Base):
    """A data product of a task, with its provenance."""

    __tablename__ = "products"
    __table_args__ = (sa.UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.run_id"), index=True)
    task_id: Mapped[str | None] = mapped_column(sa.ForeignKey("tasks.task_id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    bucket: Mapped[str] = mapped_column(sa.String(16))
    key: Mapped[str] = mapped_column(sa.String(KEY_LENGTH))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger(), doc="bytes")
    content_type: Mapped[str] = mapped_column(sa.String(128))
    provenance: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    #: the product of a run that failed later: kept, and marked
    partial: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunCaldbFile(Base):
    """One CALDB file a run uses: resolved once at the run's start, read at every dispatch."""

    __tablename__ = "run_caldb_files"

    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.run_id"), primary_key=True)
    codename: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    bucket: Mapped[str] = mapped_column(sa.String(16))
    key: Mapped[str] = mapped_column(sa.String(KEY_LENGTH))
    sha256: Mapped[str | None] = mapped_column(sa.String(64))


class AsyncCall(Base):
    """An asynchronous function invocation and its outcome."""

    __tablename__ = "async_calls"
    __table_args__ = (sa.CheckConstraint(_in("state", CALL_STATES), name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    function: Mapped[str] = mapped_column(sa.String(128), index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    status_code: Mapped[int | None]
    run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), index=True)
    task_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    callback_url: Mapped[str | None] = mapped_column(sa.String(2048))
    error: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class LogEntry(Base):
    """One structured log line; indexed for queries by run, task, function and level."""

    __tablename__ = "log_entries"
    __table_args__ = (
        sa.Index("ix_log_entries_run_id_id", "run_id", "id"),
        sa.Index("ix_log_entries_task_id_id", "task_id", "id"),
        sa.Index("ix_log_entries_function_id", "function", "id"),
        sa.Index("ix_log_entries_levelno_id", "levelno", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    level: Mapped[str] = mapped_column(sa.String(8))
    levelno: Mapped[int]
    run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    function: Mapped[str | None] = mapped_column(sa.String(128))
    call_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), index=True)
    message: Mapped[str] = mapped_column(sa.Text())
    extra: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())


# -- caldb ----------------------------------------------------------------------------
class CalibrationDataset(Base):
    """One calibration extension of a CALDB file (a row of HEASARC's ``caldb.indx``)."""

    __tablename__ = "caldb_datasets"
    __table_args__ = (
        sa.UniqueConstraint("key", "extension"),
        sa.Index("ix_caldb_datasets_lookup", "instrument", "codename", "valid_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    telescope: Mapped[str] = mapped_column(sa.String(32))
    instrument: Mapped[str] = mapped_column(sa.String(32))
    detector: Mapped[str | None] = mapped_column(sa.String(32))
    filter: Mapped[str | None] = mapped_column(sa.String(32))
    cal_class: Mapped[str] = mapped_column(sa.String(8), doc="CCLS0001, e.g. BCF, CPF")
    data_type: Mapped[str] = mapped_column(sa.String(32), doc="CDTP0001, e.g. DATA, TASK")
    codename: Mapped[str] = mapped_column(sa.String(32), doc="CCNM0001")
    valid_from: Mapped[datetime] = mapped_column(doc="CVSD0001 + CVST0001, UTC")
    description: Mapped[str] = mapped_column(sa.Text(), doc="CDES0001")
    boundaries: Mapped[list] = mapped_column(sa.JSON(), doc="parsed CBDn0001")
    caldb_version: Mapped[str] = mapped_column(sa.String(32))
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    quality: Mapped[int] = mapped_column(default=0, doc="0 good, 5 bad (caldb.indx QUALITY)")
    bucket: Mapped[str] = mapped_column(sa.String(16))
    key: Mapped[str] = mapped_column(sa.String(KEY_LENGTH))
    extension: Mapped[int] = mapped_column(doc="HDU number in the file (primary = 0)")
    extname: Mapped[str | None] = mapped_column(sa.String(72))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger(), doc="bytes")
