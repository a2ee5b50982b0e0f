"""orchestrator: ``POST /mxt/runs`` starts a run of an observation (201, the run and its DAG)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api
from gateway.orchestrator.service import StartRun

api.warm_up()

SUCCESS_STATUS = 201


async def handle(request: StartRun) -> Response:
    """Start a run: raw file, programme (or its PROGRAM header), config and CALDB choices."""
    return await api.start_run(request)
