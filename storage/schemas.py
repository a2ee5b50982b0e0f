"""Shared pieces of the request and response models of the database operations."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: a caller-chosen identifier (obs_id, run_id, task_id, call_id)
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=65536)]
Limit = Annotated[int, Field(ge=1, le=1000)]


class StrictModel(BaseModel):
    """A request model: unknown fields are errors that name the field."""

    model_config = ConfigDict(extra="forbid")


class RecordModel(BaseModel):
    """A response model read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)
