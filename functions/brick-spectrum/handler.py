"""brick-spectrum: the spectrum brick on object keys (claim-check)."""

from __future__ import annotations

from bricks.registry import get_brick
from storage.brick_adapter import BrickRequest, BrickResponse, run_brick_function, warm_up

# imported when the process starts, not on the first call: a ToO notice waits for no import
BRICK = get_brick("spectrum")
warm_up()


def handle(request: BrickRequest, context) -> BrickResponse:  # noqa: ANN001
    """Read the inputs, run the brick, write its products; answer their keys and provenance."""
    return run_brick_function(BRICK, request, context.log)
