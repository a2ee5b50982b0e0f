"""missiondb-create-run: record a run and its tasks (201; 200 if already recorded)."""

from __future__ import annotations

from starlette.responses import Response

from storage.db import transaction
from storage.http import record_response
from storage.missiondb import RunSpec, create_run


def handle(request: RunSpec) -> Response:
    """Insert-or-get by run_id; 404 if the observation is unknown."""
    with transaction() as session:
        record, created = create_run(session, request)
    return record_response(record, created)
