"""configdb-get: a programme's active configuration, or a given version."""

from __future__ import annotations

from storage.configdb import ConfigRecord, Programme, get_config
from storage.db import transaction
from storage.schemas import StrictModel, Version


class ConfigQuery(StrictModel):
    """Which configuration: the active one unless ``version`` is given."""

    programme: Programme
    version: Version | None = None


def handle(request: ConfigQuery) -> ConfigRecord:
    """The configuration; 404 if the version (or any active one) does not exist."""
    with transaction(read_only=True) as session:
        return get_config(session, request.programme, request.version)
