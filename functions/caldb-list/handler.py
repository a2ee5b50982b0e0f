"""caldb-list: the calibration index, filtered and paged."""

from __future__ import annotations

from storage.caldb import CaldbListRequest, CaldbPage, list_page
from storage.db import transaction


def handle(request: CaldbListRequest) -> CaldbPage:
    """One page of index rows in ingest order."""
    with transaction(read_only=True) as session:
        return list_page(session, request)
