"""orchestrator-runs: ``GET /mxt/runs``, ``/mxt/runs/{run_id}``, ``/mxt/runs/{run_id}/products``."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api


def handle(request: api.RunQuery) -> Response:
    """A page of runs, a run with its tasks, or a run's products with provenance."""
    return api.query_runs(request)
