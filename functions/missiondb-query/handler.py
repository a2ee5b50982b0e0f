"""missiondb-query: observations, runs, tasks, products, calls or logs, filtered and paged."""

from __future__ import annotations

from storage.db import transaction
from storage.missiondb import QueryPage, QueryRequest, query


def handle(request: QueryRequest) -> QueryPage:
    """One page; filters may be given in ``filters`` or beside the other fields."""
    with transaction(read_only=True) as session:
        return query(session, request)
