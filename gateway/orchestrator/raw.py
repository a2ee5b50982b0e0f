"""What the orchestrator reads of a raw L0 file before a run: its primary header.

Only the first few FITS blocks are fetched (a range read), so starting a run costs the
same for 10⁴ or 10⁷ events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bricks.errors import BadInput, NotFound
from storage.schemas import identifier

RAW_BUCKET = "raw"
#: FITS blocks fetched to find the primary header's END card (36 cards per block)
HEADER_BYTES = 2880 * 8


@dataclass(frozen=True)
class RawObservation:
    """The identity of an L0 file: where it is and what its header says.

    ``tstart`` is mission time in seconds; ``date_obs`` ISO 8601 (TT).
    """

    ref: str
    sha256: str | None
    obs_id: str
    program: str
    date_obs: str
    tstart: float
    object_name: str | None = None
    ra: float | None = None
    dec: float | None = None
    burst_id: str | None = None


def raw_ref(raw_key: str) -> tuple[str, str]:
    """``(bucket, key)`` of a raw file given as ``raw/<obs_id>/<file>`` or a key in ``raw``."""
    key = raw_key.removeprefix(f"{RAW_BUCKET}/")
    if not key or key.startswith("/"):
        raise BadInput(f"raw_key {raw_key!r} names no object in the raw bucket")
    return RAW_BUCKET, key


def read_raw_observation(store: Any, raw_key: str) -> RawObservation:
    """Read the primary header of the L0 file ``raw_key``.

    Raises
    ------
    NotFound
        No such object in the raw bucket.
    BadInput
        Not a FITS file, a header keyword the run needs is missing (named), or
        ``OBS_ID``/``BURST_ID`` is not an identifier (``../../x``, a quote).
    """
    from astropy.io import fits

    bucket, key = raw_ref(raw_key)
    info = store.head(bucket, key)
    head = store.get_range(bucket, key, 0, HEADER_BYTES)
    end = _end_of_header(head)
    if end is None:
        raise BadInput(f"raw file {bucket}/{key} does not start with a FITS primary header")
    try:
        header = fits.Header.fromstring(head[:end].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"raw file {bucket}/{key}: unreadable primary header: {exc}") from None
    missing = [k for k in ("OBS_ID", "PROGRAM", "DATE-OBS", "TSTART") if k not in header]
    if missing:
        raise BadInput(f"raw file {bucket}/{key}: primary header lacks keyword(s) {missing}")
    return RawObservation(
        ref=f"{bucket}/{key}",
        sha256=info.sha256,
        obs_id=identifier(header["OBS_ID"], f"raw file {bucket}/{key}: OBS_ID"),
        program=str(header["PROGRAM"]),
        date_obs=str(header["DATE-OBS"]),
        tstart=_number(header["TSTART"], f"raw file {bucket}/{key}: TSTART"),
        object_name=_optional(header, "OBJECT", str),
        ra=_optional(header, "RA_OBJ", lambda v: _number(v, f"raw file {bucket}/{key}: RA_OBJ")),
        dec=_optional(header, "DEC_OBJ", lambda v: _number(v, f"raw file {bucket}/{key}: DEC_OBJ")),
        burst_id=_optional(
            header, "BURST_ID", lambda v: identifier(v, f"raw file {bucket}/{key}: BURST_ID")
        ),
    )


def _number(value: Any, what: str) -> float:
    """A finite number from a header value; ``BadInput`` naming ``what`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise BadInput(f"{what} {value!r} is not a finite number")
    return number


def _optional(header: Any, keyword: str, kind: Callable[[Any], Any]) -> Any:
    value = header.get(keyword)
    return None if value is None or value == "" else kind(value)


def _end_of_header(head: bytes) -> int | None:
    """Byte offset just past the block holding the ``END`` card, or None."""
    if not head.startswith(b"SIMPLE  ="):
        return None
    for card in range(0, len(head) - 79, 80):
        if head[card : card + 8] == b"END     ":
            return card + 80
    return None


__all__ = ["NotFound", "RawObservation", "raw_ref", "read_raw_observation"]
