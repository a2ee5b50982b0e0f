"""orchestrator-advance: a brick call finished (topic ``mxt.calls.completed.brick-*``)."""

from __future__ import annotations

from gateway.messages import CallCompleted
from gateway.orchestrator import api

api.warm_up()


async def handle(request: CallCompleted) -> dict[str, str]:
    """Record the brick's outcome and dispatch what became ready."""
    return await api.advance(request)
