"""orchestrator-too: ``POST /mxt_too_pipeline/runs``, the ToO programme's entry point."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api

SUCCESS_STATUS = 201


async def handle(request: api.ProgrammeStart) -> Response:
    """Start a ToO run of an observation, whatever its PROGRAM header says."""
    return await api.start_programme_run(request, "ToO")
