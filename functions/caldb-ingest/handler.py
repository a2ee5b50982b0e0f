"""caldb-ingest: check, store and index a CALDB file (201; 200 if already ingested).

Body: the FITS file (options ``filename``, ``quality``, ``caldb_version`` as query
parameters), or JSON ``{"key": ...}`` naming a file already in the caldb bucket.
"""

from __future__ import annotations

from starlette.responses import Response

from storage.caldb import ingest_body
from storage.db import transaction
from storage.http import record_response
from storage.objects import get_store


def handle(body: bytes, context) -> Response:  # noqa: ANN001 - the runtime's Context
    """Ingest; 422 naming the keyword and HDU when a CALDB keyword is missing."""
    content_type = context.headers.get("content-type", "application/octet-stream")
    with transaction() as session:
        result = ingest_body(session, get_store(), body, content_type, dict(context.query))
    return record_response(result, result.created)
