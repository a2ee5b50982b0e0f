"""Shared pieces of the request and response models of the database operations."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bricks.errors import BadInput

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
IDENTIFIER_MAX_LENGTH = 128
#: a caller-chosen identifier (obs_id, run_id, task_id, call_id)
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN),
]
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: PostgreSQL text cannot hold NUL characters: refused up front, never a 500 at insert
_NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, StringConstraints(max_length=256, pattern=_NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=65536, pattern=_NO_NUL)]
#: for columns of 128 and 32 characters
Text128 = Annotated[str, StringConstraints(max_length=128, pattern=_NO_NUL)]
Text32 = Annotated[str, StringConstraints(max_length=32, pattern=_NO_NUL)]
Limit = Annotated[int, Field(ge=1, le=1000)]
#: a version number (an INTEGER column)
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
#: a row id to continue a listing after (a BIGINT column)
RowId = Annotated[int, Field(ge=0, le=2**63 - 1)]


def identifier(value: Any, what: str) -> str:
    """``value`` if it is an :data:`Identifier`; ``BadInput`` (400) naming ``what`` otherwise.

    For identifiers read from data rather than from a request model (a FITS header's
    ``OBS_ID``): a path like ``../../x`` or a quote is the sender's error, never a 500.
    """
    text = str(value)
    if len(text) > IDENTIFIER_MAX_LENGTH or not _IDENTIFIER.fullmatch(text):
        raise BadInput(
            f"{what} {text[:IDENTIFIER_MAX_LENGTH]!r} is not an identifier: 1 to "
            f"{IDENTIFIER_MAX_LENGTH} letters, digits and . _ : -, starting with a letter or digit"
        )
    return text


M = TypeVar("M", bound=BaseModel)


def from_data(model: type[M], what: str, **fields: Any) -> M:
    """``model(**fields)`` for fields read from data (a FITS header), not from a request:
    ``BadInput`` (400) naming ``what``, the field and the value, never a ``ValidationError``
    (which the runtime cannot classify: a 500, and retries of the same bad data).
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        value = repr(error.get("input"))[:80]
        raise BadInput(f"{what}: {field} = {value}: {error['msg']}", field=field) from None


class StrictModel(BaseModel):
    """A request model: unknown fields are errors that name the field."""

    model_config = ConfigDict(extra="forbid")


class RecordModel(BaseModel):
    """A response model read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)
