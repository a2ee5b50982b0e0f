"""configdb-put: store a version of a programme's configuration (201; 200 if identical)."""

from __future__ import annotations

from starlette.responses import Response

from storage.configdb import ConfigSpec, put_config
from storage.db import transaction
from storage.http import record_response


def handle(request: ConfigSpec) -> Response:
    """Insert-or-get the version; 409 if an explicit version exists with other content."""
    with transaction() as session:
        record, created = put_config(session, request)
    return record_response(record, created)
