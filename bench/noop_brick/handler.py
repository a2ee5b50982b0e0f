"""A brick function that does nothing: answers its brick's declared outputs at once.

``bench/chain.py`` serves every ``brick-*`` function with this handler, so a run's
wall time is the orchestration alone: dispatch, queue worker, completion event,
connector, advance. The outputs point at one empty object.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bricks.registry import get_brick
from storage.brick_adapter import BrickRequest, BrickResponse, ObjectRef

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def handle(request: BrickRequest, context: Any) -> BrickResponse:
    """The declared outputs of the function's brick, all pointing at an empty object."""
    brick = get_brick(context.function.removeprefix("brick-"))
    run = request.run_id
    outputs = {
        p.name: ObjectRef(
            ref=f"products/{run}/{brick.name}/{p.filename}", sha256=EMPTY_SHA256, size=0
        )
        for p in brick.outputs
    }
    return BrickResponse(
        brick=brick.name,
        version=brick.version,
        run_id=run,
        task_id=request.task_id,
        outputs=outputs,
        provenance={"brick": brick.name, "brick_version": brick.version, "noop": True},
    )
