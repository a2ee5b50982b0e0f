"""objects-upload: store raw data and announce it on ``mxt.storage.raw`` (201).

Body: the file; query parameters ``key`` (and ``bucket``, only ``raw``).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from storage.objects import get_store
from storage.uploads import receive_upload


async def handle(body: bytes, context) -> Response:  # noqa: ANN001 - the runtime's Context
    """Store, then publish the MinIO-shaped object-created event."""
    result = await receive_upload(
        get_store(), body, context.headers.get("content-type"), dict(context.query)
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=201)
