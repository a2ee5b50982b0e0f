"""orchestrator-raw-arrived: an L0 file landed in the raw bucket (topic ``mxt.storage.raw``)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator import api

api.warm_up()


async def handle(request: bytes) -> Response:
    """Start the run of each FITS file the MinIO-shaped event names."""
    return await api.raw_arrived(api.parse_event(request))
