"""configdb-get: a programme's active configuration, or a given version."""

from __future__ import annotations

from pydantic import Field

from storage.configdb import ConfigRecord, Programme, get_config
from storage.db import transaction
from storage.schemas import StrictModel


class ConfigQuery(StrictModel):
    """Which configuration: the active one unless ``version`` is given."""

    programme: Programme
    version: int | None = Field(default=None, ge=1)


def handle(request: ConfigQuery) -> ConfigRecord:
    """The configuration; 404 if the version (or any active one) does not exist."""
    with transaction() as session:
        return get_config(session, request.programme, request.version)
