"""Storage settings from the environment, built lazily so tests never depend on it.

The variables are those of ``docs/development.md``: ``MXT_DATA_DIR``,
``MXT_DATABASE_URL``, ``MXT_OBJECT_STORE``, ``MXT_S3_ENDPOINT``, ``MXT_SECRETS_DIR``,
``MXT_NATS_URL`` and ``MXT_GATEWAY_URL``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/mxt``, or ``~/.local/share/mxt``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "mxt"


class StorageSettings(BaseSettings):
    """Where data, metadata and secrets live."""

    model_config = SettingsConfigDict(env_prefix="MXT_", extra="ignore")

    data_dir: Path = default_data_dir()
    database_url: str | None = None
    object_store: Literal["local", "s3"] = "local"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    secrets_dir: Path | None = None
    nats_url: str | None = None
    gateway_url: str = "http://127.0.0.1:8080"
    #: migrate the database to head on first use (the embedded stack's default)
    auto_migrate: bool = True
    #: publish object-created events on upload (default: only with the local store)
    publish_storage_events: bool | None = None

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: ``MXT_DATABASE_URL`` or SQLite under the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'mxt.db'}"

    @property
    def resolved_secrets_dir(self) -> Path:
        """The secrets directory: ``MXT_SECRETS_DIR`` or ``$MXT_DATA_DIR/secrets``."""
        return self.secrets_dir or self.data_dir / "secrets"

    def secret(self, name: str) -> str | None:
        """The content of secret file ``name`` (stripped), or None when absent."""
        path = self.resolved_secrets_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            return None


def positive_env(name: str, default: float, kind: type = int) -> float:
    """A positive number (``kind``: ``int`` or ``float``) from environment variable
    ``name``, ``default`` when unset or empty.

    Raises
    ------
    ValueError
        Naming the variable whose value is not a positive number of that kind.
    """
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}={raw!r} is not {expected}") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@lru_cache(maxsize=1)
def get_settings() -> StorageSettings:
    """The process's settings, read from the environment on first use."""
    return StorageSettings()
