"""A new python3-mxt function: replace the models and the body of handle()."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    """What the function is called with (JSON body, validated: 422 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    name: str


class Response(BaseModel):
    """What the function answers (JSON)."""

    greeting: str


def handle(request: Request, context) -> Response:  # noqa: ANN001
    """Greet ``request.name``; ``context`` has call_id, path, query, headers and log."""
    context.log.info("greeting", extra={"name": request.name})
    return Response(greeting=f"Hello, {request.name}")
