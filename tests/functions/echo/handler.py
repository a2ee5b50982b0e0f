"""echo: returns what it is sent; the no-op function of tests and benchmarks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EchoRequest(BaseModel):
    """What to echo."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="text returned unchanged", max_length=1_000_000)
    data: dict[str, Any] | None = Field(default=None, description="any JSON object")


class EchoResponse(BaseModel):
    """The request, unchanged, and the sub-path it was sent to."""

    message: str
    data: dict[str, Any] | None
    path: str


async def handle(request: EchoRequest, context) -> EchoResponse:  # noqa: ANN001
    """Echo the message and data back."""
    return EchoResponse(message=request.message, data=request.data, path=context.path)
