"""configdb-list: every version of the programmes' configurations, and activation history."""

from __future__ import annotations

from pydantic import BaseModel

from storage.configdb import (
    ActivationRecord,
    ConfigRecord,
    Programme,
    activation_history,
    list_configs,
)
from storage.db import transaction
from storage.schemas import StrictModel


class ConfigListQuery(StrictModel):
    """Optionally one programme (its activation history is then included)."""

    programme: Programme | None = None


class ConfigList(BaseModel):
    """Versions by programme then version; activations oldest first."""

    configs: list[ConfigRecord]
    activations: list[ActivationRecord]


def handle(request: ConfigListQuery) -> ConfigList:
    """All versions (of one programme, with its history)."""
    with transaction(read_only=True) as session:
        configs = list_configs(session, request.programme)
        history = activation_history(session, request.programme) if request.programme else []
    return ConfigList(configs=configs, activations=history)
