"""`mxt db upgrade` and `mxt db current` on SQLite and PostgreSQL, through the CLI."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner

from local.cli import main
from local.cli_db import head_revision
from storage.db.engine import make_engine


def test_upgrade_migrates_an_empty_database_then_reports_it_at_head(database_url: str):
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--database-url", database_url])
    assert first.exit_code == 0, first.output
    assert f"migrated from an empty schema to {head_revision()}" in first.output
    engine = make_engine(database_url)
    try:
        assert "run_caldb_files" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    again = runner.invoke(main, ["db", "upgrade", "--database-url", database_url])
    assert again.exit_code == 0 and "(head) already" in again.output
    current = runner.invoke(main, ["db", "current", "--database-url", database_url])
    assert f"revision {head_revision()}, head {head_revision()}" in current.output


def test_upgrade_defaults_to_the_settings_database(tmp_path, monkeypatch):
    from storage import settings

    monkeypatch.delenv("MXT_DATABASE_URL", raising=False)
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path))
    settings.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["db", "upgrade"])
    finally:
        settings.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mxt.db").exists()


def test_unreachable_and_malformed_urls_fail_with_the_reason():
    runner = CliRunner()
    refused = runner.invoke(
        main, ["db", "upgrade", "--database-url", "postgresql+psycopg://mxt@127.0.0.1:1/x"]
    )
    assert refused.exit_code == 1
    assert "unreachable" in refused.output and "refused" in refused.output.lower()
    malformed = runner.invoke(main, ["db", "upgrade", "--database-url", "not a url"])
    assert malformed.exit_code == 2 and "--database-url" in malformed.output
