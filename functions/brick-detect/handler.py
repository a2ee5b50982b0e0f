"""brick-detect: the detect brick on object keys (claim-check)."""

from __future__ import annotations

from storage.brick_adapter import BrickRequest, BrickResponse, handle_brick


def handle(request: BrickRequest, context) -> BrickResponse:  # noqa: ANN001
    """Read the inputs, run the brick, write its products; answer their keys and provenance."""
    return handle_brick("detect", request, context.log)
