"""`mxt db`: the schema of configdb, missiondb and caldb (Alembic migrations)."""

from __future__ import annotations

import click

DATABASE_URL_HELP = "SQLAlchemy URL (default: MXT_DATABASE_URL, else SQLite under MXT_DATA_DIR)"


def _database_url(given: str | None) -> str:
    """The URL to migrate: the option's, or the settings' (as every function resolves it)."""
    if given:
        return given
    from storage.settings import get_settings

    return get_settings().resolved_database_url


def current_revision(url: str) -> str | None:
    """The Alembic revision the database at ``url`` is at; None for an unmigrated one."""
    from alembic.migration import MigrationContext

    from storage.db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The latest revision of our migrations."""
    from alembic.script import ScriptDirectory

    from storage.db.engine import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group("db")
def db() -> None:
    """The databases' schema: configdb, missiondb and caldb share one migration history."""


@db.command("upgrade")
@click.option("--database-url", default=None, help=DATABASE_URL_HELP)
def db_upgrade(database_url: str | None) -> None:
    """Migrate the database to the latest revision (safe to repeat, and to run concurrently)."""
    from sqlalchemy import exc
    from sqlalchemy.engine import make_url

    from storage.db.engine import upgrade_to_head

    url = _database_url(database_url)
    try:
        make_url(url)
    except exc.ArgumentError as error:
        raise click.BadParameter(str(error), param_hint="--database-url") from error
    try:
        before = current_revision(url)
        upgrade_to_head(url)
        after = current_revision(url)
    except (exc.OperationalError, exc.InterfaceError) as error:
        raise click.ClickException(f"database {_shown(url)} unreachable: {error.orig}") from error
    if before == after:
        click.echo(f"{_shown(url)}: at revision {after} (head) already")
    else:
        click.echo(f"{_shown(url)}: migrated from {before or 'an empty schema'} to {after}")


@db.command("current")
@click.option("--database-url", default=None, help=DATABASE_URL_HELP)
def db_current(database_url: str | None) -> None:
    """Print the database's revision and the latest one."""
    from sqlalchemy import exc

    url = _database_url(database_url)
    try:
        revision = current_revision(url)
    except (exc.OperationalError, exc.InterfaceError) as error:
        raise click.ClickException(f"database {_shown(url)} unreachable: {error.orig}") from error
    click.echo(f"{_shown(url)}: revision {revision or 'none (empty)'}, head {head_revision()}")


COMMANDS = [db]
