"""Migrations build the schema from nothing, and the models match them."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from storage.db.base import Base
from storage.db.engine import make_engine, upgrade_to_head

EXPECTED_TABLES = {
    "programme_configs",
    "active_configs",
    "config_activations",
    "observations",
    "runs",
    "tasks",
    "products",
    "async_calls",
    "log_entries",
    "caldb_datasets",
    "run_caldb_files",
    "alembic_version",
}


def test_upgrade_empty_database_to_head(database_url: str):
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == EXPECTED_TABLES


def test_upgrade_is_idempotent(database_url: str):
    upgrade_to_head(database_url)
    upgrade_to_head(database_url)


def test_models_match_migrations(database_url: str):
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_upgrade_keeps_a_run_caldb_files_table_made_before_0002(database_url: str):
    """Databases where the orchestrator created the table itself reach head unchanged."""
    from alembic import command

    from storage.db.engine import alembic_config

    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
            connection.exec_driver_sql(
                "CREATE TABLE run_caldb_files (run_id VARCHAR(128) NOT NULL, "
                "codename VARCHAR(32) NOT NULL, bucket VARCHAR(16) NOT NULL, "
                "key VARCHAR(1024) NOT NULL, sha256 VARCHAR(64), PRIMARY KEY (run_id, codename))"
            )
            connection.exec_driver_sql(
                "INSERT INTO run_caldb_files VALUES ('r-1', 'GAIN', 'caldb', 'k', NULL)"
            )
        upgrade_to_head(database_url)
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert version.scalar() == "0002"
            rows = connection.exec_driver_sql("SELECT run_id, codename FROM run_caldb_files")
            assert rows.all() == [("r-1", "GAIN")]
    finally:
        engine.dispose()


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_concurrent_upgrades_serialise(database_url: str):
    """Function processes starting together all migrate the same fresh database."""
    import threading

    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            upgrade_to_head(database_url)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = make_engine(database_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) == EXPECTED_TABLES
    finally:
        engine.dispose()
