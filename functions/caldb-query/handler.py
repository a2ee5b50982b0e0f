"""caldb-query: the best calibration file for an instrument, codename, time and boundaries."""

from __future__ import annotations

from storage.caldb import CaldbAnswer, CaldbQuery, answer_query
from storage.db import transaction


def handle(request: CaldbQuery) -> CaldbAnswer:
    """quzcif's selection; 404 when no file matches."""
    with transaction(read_only=True) as session:
        return answer_query(session, request)
