"""orchestrator-control: ``POST /mxt/runs/{run_id}/cancel`` and ``/mxt/runs/{run_id}/rerun``."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api


async def handle(request: api.RunControl) -> Response:
    """Cancel a running run, or re-run its observation under a new run id."""
    return await api.control_run(request)
