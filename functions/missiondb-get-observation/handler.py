"""missiondb-get-observation: one observation by obs_id."""

from __future__ import annotations

from storage.db import transaction
from storage.missiondb import ObservationRecord, get_observation
from storage.schemas import Identifier, StrictModel


class ObservationQuery(StrictModel):
    """The observation's identifier."""

    obs_id: Identifier


def handle(request: ObservationQuery) -> ObservationRecord:
    """The observation; 404 if unknown."""
    with transaction(read_only=True) as session:
        return get_observation(session, request.obs_id)
