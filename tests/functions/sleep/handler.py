"""sleep: waits a given time, then answers; for timeout and concurrency tests."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field


class SleepRequest(BaseModel):
    """How long to sleep."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=60, description="time to sleep, in seconds (0-60)")


class SleepResponse(BaseModel):
    """The time slept."""

    slept_seconds: float = Field(description="time slept, in seconds")


async def handle(request: SleepRequest) -> SleepResponse:
    """Sleep ``seconds`` without blocking other calls, then answer."""
    await asyncio.sleep(request.seconds)
    return SleepResponse(slept_seconds=request.seconds)
