"""missiondb-register-product: record a product with its provenance (201; 200 if identical)."""

from __future__ import annotations

from starlette.responses import Response

from storage.db import transaction
from storage.http import record_response
from storage.missiondb import ProductSpec, register_product


def handle(request: ProductSpec) -> Response:
    """Insert-or-get by (run, name); 409 if it exists with another key or checksum."""
    with transaction() as session:
        record, created = register_product(session, request)
    return record_response(record, created)
