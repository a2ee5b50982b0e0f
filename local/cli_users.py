"""`mxt users`: the gateway's users and their roles (the ``users`` secret file).

The admin is the OpenFaaS ``basic-auth-password`` secret; every other user is a line
of ``secrets/users`` with an scrypt hash of the password. A running gateway reads the
file again within a second, so adding, changing or removing a user needs no restart.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from local.cli_platform import DATA_DIR_OPTION, _data_dir

ROLES = ("scientist", "operator", "admin")


def _secrets_dir(data_dir: Path | None) -> Path:
    """``MXT_SECRETS_DIR``, else ``DATA_DIR/secrets`` (as the stack resolves it)."""
    explicit = os.environ.get("MXT_SECRETS_DIR")
    return Path(explicit) if explicit else _data_dir(data_dir) / "secrets"


def _read(secrets_dir: Path) -> dict:
    from gateway.auth import SecretError, read_users

    try:
        return read_users(secrets_dir)
    except SecretError as exc:
        raise click.ClickException(f"{exc}; fix or remove that line first") from None


@click.group()
def users() -> None:
    """List, add and remove the gateway's users (roles: scientist, operator, admin)."""


@users.command(name="list")
@DATA_DIR_OPTION
def list_users(data_dir: Path | None) -> None:
    """Every user and its role (the admin is the basic-auth-password secret)."""
    secrets_dir = _secrets_dir(data_dir)
    click.echo(f"admin      admin      (password in {secrets_dir / 'basic-auth-password'})")
    for entry in _read(secrets_dir).values():
        click.echo(f"{entry.name:<10} {entry.role.name.lower()}")


@users.command(name="add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="what the user may do")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="read the password from this file (default: a random one, printed once)",
)
@DATA_DIR_OPTION
def add_user(name: str, role: str, password_file: Path | None, data_dir: Path | None) -> None:
    """Add user NAME with ROLE, or change its role and password."""
    from gateway.auth import ADMIN_USER, USER_NAME, Role, UserEntry, hash_password, write_users

    if name == ADMIN_USER or not USER_NAME.match(name):
        raise click.ClickException(
            f"user name {name!r}: lower-case letters, digits, '.', '_' or '-', starting with "
            "a letter, at most 64 characters, and not 'admin' (its password is its own secret)"
        )
    password = password_file.read_text().strip() if password_file else secrets.token_urlsafe(18)
    if len(password) < 12:
        raise click.ClickException("the password must be at least 12 characters long")
    secrets_dir = _secrets_dir(data_dir)
    known = _read(secrets_dir)
    known[name] = UserEntry(name, Role.parse(role), hash_password(password))
    path = write_users(secrets_dir, known)
    click.echo(f"user {name} ({role}) written to {path}")
    if password_file is None:
        click.echo(f"password   {password}   (shown once: only its hash is kept)")


@users.command(name="remove")
@click.argument("name")
@DATA_DIR_OPTION
def remove_user(name: str, data_dir: Path | None) -> None:
    """Remove user NAME (its next request is refused)."""
    from gateway.auth import write_users

    secrets_dir = _secrets_dir(data_dir)
    known = _read(secrets_dir)
    if known.pop(name, None) is None:
        raise click.ClickException(f"no user named {name!r} in {secrets_dir / 'users'}")
    write_users(secrets_dir, known)
    click.echo(f"user {name} removed")


COMMANDS = [users]
