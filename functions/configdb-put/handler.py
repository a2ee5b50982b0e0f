"""configdb-put: store a version of a programme's configuration (201; 200 if identical)."""

from __future__ import annotations

from starlette.responses import Response

from gateway.orchestrator.programme import build_dag
from storage.configdb import ConfigSpec, check_programme, put_config
from storage.db import transaction
from storage.http import record_response


def handle(request: ConfigSpec) -> Response:
    """Insert-or-get the version; 409 if an explicit version exists with other content.

    A configuration the orchestrator could not run (unknown brick, an input no needed
    brick produces, parameters a brick's or the programme's model refuses) is refused
    with 422 naming the brick, product or field, and nothing is stored. It is checked
    before the write transaction: the first check imports the bricks' declarations.
    """
    where = "not stored" + (" nor activated" if request.activate else "")
    check_programme(request, build_dag, where)
    with transaction() as session:
        record, created = put_config(session, request)
    return record_response(record, created)
