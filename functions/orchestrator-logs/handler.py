"""orchestrator-logs: ``GET /mxt/runs/{run_id}/logs`` (``follow=true``: server-sent events)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api


def handle(request: api.LogQuery) -> Response:
    """Log lines of a run by task, function and minimum level; followed live on request."""
    return api.run_logs(request)
