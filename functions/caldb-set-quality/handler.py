"""caldb-set-quality: flag a CALDB file good (0) or bad (5); bad files are never selected."""

from __future__ import annotations

from pydantic import BaseModel

from storage.caldb import QualityChange, set_quality
from storage.db import transaction


class QualityChanged(BaseModel):
    """How many extensions changed."""

    key: str
    quality: int
    extensions: int


def handle(request: QualityChange) -> QualityChanged:
    """Set the flag of every extension of the file; 404 if it is not indexed."""
    with transaction() as session:
        count = set_quality(session, request.key, request.quality)
    return QualityChanged(key=request.key, quality=request.quality, extensions=count)
