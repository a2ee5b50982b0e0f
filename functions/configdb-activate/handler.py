"""configdb-activate: make a version the active configuration of its programme."""

from __future__ import annotations

from storage.configdb import ConfigRecord, Programme, activate
from storage.db import transaction
from storage.schemas import ShortText, StrictModel, Version


class Activation(StrictModel):
    """The version to activate, and why."""

    programme: Programme
    version: Version
    comment: ShortText = ""


def handle(request: Activation) -> ConfigRecord:
    """Activate (recorded in the history); 404 if the version does not exist."""
    with transaction() as session:
        return activate(session, request.programme, request.version, request.comment)
