"""objects-download: an object's bytes, streamed (the local store's download URLs)."""

from __future__ import annotations

from starlette.responses import Response

from storage.http import object_response
from storage.objects import get_store
from storage.uploads import DownloadParams


def handle(request: DownloadParams) -> Response:
    """The object; 404 if absent, 400 for an invalid key."""
    return object_response(get_store(), request.bucket, request.key)
