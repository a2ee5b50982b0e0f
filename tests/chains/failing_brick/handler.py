"""A brick function that always fails transiently: the fault tests' brick that never works."""

from __future__ import annotations

from bricks.errors import Transient
from storage.brick_adapter import BrickRequest, BrickResponse


def handle(request: BrickRequest) -> BrickResponse:
    """Fail as a storage outage would, every time."""
    raise Transient(f"injected fault: {request.task_id} cannot reach its storage")
