"""caldb-download: a CALDB file's bytes, streamed."""

from __future__ import annotations

from pydantic import Field
from starlette.responses import Response

from storage.caldb.index import CALDB_BUCKET
from storage.http import object_response
from storage.objects import get_store
from storage.schemas import StrictModel


class CaldbFile(StrictModel):
    """The file's key in the caldb bucket (``data/svom/mxt/bcf/...``)."""

    key: str = Field(max_length=1024)


def handle(request: CaldbFile) -> Response:
    """The file; 404 if absent, 400 for an invalid key."""
    return object_response(get_store(), CALDB_BUCKET, request.key)
