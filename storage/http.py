"""What the storage functions' handlers share: status codes, parameters, streamed files."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, StreamingResponse

from bricks.errors import BadInput
from storage.objects import ObjectStore

Params = TypeVar("Params", bound=BaseModel)


def record_response(record: BaseModel, created: bool) -> JSONResponse:
    """201 with the record when it was created, 200 when it existed (insert-or-get)."""
    return JSONResponse(record.model_dump(mode="json"), status_code=201 if created else 200)


def parse_params(model: type[Params], values: Mapping[str, Any]) -> Params:
    """Validate query parameters into ``model``; the first bad field is named (400)."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "parameters"
        raise BadInput(f"{field}: {error['msg']}", field=field) from exc


def object_response(store: ObjectStore, bucket: str, key: str) -> StreamingResponse:
    """The object streamed as the response body, with its size, checksum and name.

    Raises
    ------
    NotFound
        Before any byte is sent, so a missing object is a clean 404.
    """
    info = store.head(bucket, key)
    chunks: Iterator[bytes] = store.stream(bucket, key)
    filename = key.rsplit("/", 1)[-1]
    headers = {
        "content-length": str(info.size),
        "etag": f'"{info.etag}"',
        "content-disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
    }
    if info.sha256:
        headers["x-checksum-sha256"] = info.sha256
    return StreamingResponse(chunks, media_type=info.content_type, headers=headers)
