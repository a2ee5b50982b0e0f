"""fail-n-times: fails transiently (503) the first N calls for a key, then succeeds.

Used by the retry and dead-letter tests. Function processes are stateless and may
be restarted or replicated, so the attempt count of each key lives in a file
(``<state_dir>/<key>.attempts``, state_dir defaulting to
``$MXT_DATA_DIR/fail-n-times``), updated under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bricks.errors import Transient
from storage.settings import default_data_dir


class FailRequest(BaseModel):
    """Which counter, and how many failures before success."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="name of the counter")
    failures: int = Field(ge=0, le=1000, description="calls that fail before the first success")
    retry_after_seconds: float | None = Field(
        default=None, ge=0, description="Retry-After sent with each failure, in seconds"
    )
    state_dir: str | None = Field(
        default=None, description="directory of the counters; $MXT_DATA_DIR/fail-n-times if omitted"
    )


class FailResponse(BaseModel):
    """The successful call."""

    key: str
    attempts: int = Field(description="calls made for this key, this one included")


def handle(request: FailRequest) -> FailResponse:
    """Count this call; fail with a transient error while the count is ≤ ``failures``."""
    attempts = count_attempt(_state_dir(request) / f"{request.key}.attempts")
    if attempts <= request.failures:
        raise Transient(
            f"planned failure {attempts} of {request.failures} for key {request.key!r}",
            retry_after=request.retry_after_seconds,
            attempts=attempts,
        )
    return FailResponse(key=request.key, attempts=attempts)


def count_attempt(counter: Path) -> int:
    """Add one to the counter file and return the new count (safe across processes)."""
    counter.parent.mkdir(parents=True, exist_ok=True)
    with open(counter, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        attempts = int(file.read().strip() or 0) + 1
        file.seek(0)
        file.truncate()
        file.write(str(attempts))
        return attempts


def _state_dir(request: FailRequest) -> Path:
    """Where the counters live."""
    if request.state_dir:
        return Path(request.state_dir)
    data_dir = os.environ.get("MXT_DATA_DIR")
    return (Path(data_dir) if data_dir else default_data_dir()) / "fail-n-times"
