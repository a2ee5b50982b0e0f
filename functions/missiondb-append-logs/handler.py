"""missiondb-append-logs: store structured log lines in the log index."""

from __future__ import annotations

from pydantic import BaseModel, Field

from storage.db import transaction
from storage.missiondb import LogSpec, append_logs
from storage.schemas import StrictModel

SUCCESS_STATUS = 201


class LogBatch(StrictModel):
    """Up to 1000 lines at once."""

    lines: list[LogSpec] = Field(min_length=1, max_length=1000)


class Stored(BaseModel):
    """How many lines were stored."""

    stored: int


def handle(request: LogBatch) -> Stored:
    """Append the lines in one transaction."""
    with transaction() as session:
        return Stored(stored=append_logs(session, request.lines))
