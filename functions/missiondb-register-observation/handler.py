"""missiondb-register-observation: record an observation (201; 200 if already recorded)."""

from __future__ import annotations

from starlette.responses import Response

from storage.db import transaction
from storage.http import record_response
from storage.missiondb import ObservationSpec, register_observation


def handle(request: ObservationSpec) -> Response:
    """Insert-or-get by obs_id; 409 if it exists with another raw file."""
    with transaction() as session:
        record, created = register_observation(session, request)
    return record_response(record, created)
