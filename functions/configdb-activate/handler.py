"""configdb-activate: make a version the active configuration of its programme."""

from __future__ import annotations

from gateway.orchestrator.programme import build_dag
from storage.configdb import (
    ConfigRecord,
    Programme,
    activate,
    check_programme,
    get_config,
    stored_spec,
)
from storage.db import transaction
from storage.schemas import ShortText, StrictModel, Version


class Activation(StrictModel):
    """The version to activate, and why."""

    programme: Programme
    version: Version
    comment: ShortText = ""


def handle(request: Activation) -> ConfigRecord:
    """Activate (recorded in the history); 404 if the version does not exist.

    The version is checked again as configdb-put checks new ones: one stored before
    that check, or runnable no more, is refused (422 naming the problem) and the
    active version stays. Versions are immutable, so what is checked is what is
    activated.
    """
    with transaction(read_only=True) as session:
        record = get_config(session, request.programme, request.version)
    refused = f"version {request.version} not activated"
    check_programme(stored_spec(record, refused), build_dag, refused)
    with transaction() as session:
        return activate(session, request.programme, request.version, request.comment)
