"""Mission time: TT seconds since MJDREF = 57754 (2017-01-01T00:00:00 TT).

TT has no leap seconds, so mission time is plain calendar arithmetic on a TT clock
reading; no astropy time-scale machinery is needed (or wanted, for speed).
"""

from __future__ import annotations

from datetime import datetime, timedelta

MJDREF = 57754
MJDREFI = 57754
MJDREFF = 0.0
MISSION_EPOCH = datetime(2017, 1, 1)
SECONDS_PER_YEAR = 365.25 * 86400.0

TIME_KEYWORDS: dict[str, object] = {
    "TIMESYS": "TT",
    "MJDREFI": MJDREFI,
    "MJDREFF": MJDREFF,
    "TIMEUNIT": "s",
    "TIMEREF": "LOCAL",
}


def mission_seconds(iso_tt: str) -> float:
    """Mission time of an ISO 8601 TT date.

    Parameters
    ----------
    iso_tt
        ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS[.ffffff]``, on the TT scale.

    Returns
    -------
    float
        Seconds since 2017-01-01T00:00:00 TT.
    """
    try:
        moment = datetime.fromisoformat(iso_tt.strip().rstrip("Z"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date: {iso_tt!r}") from exc
    if moment.tzinfo is not None:
        raise ValueError(f"mission dates are TT clock readings without a zone: {iso_tt!r}")
    return (moment - MISSION_EPOCH).total_seconds()


def iso_from_mission(seconds: float) -> str:
    """ISO 8601 TT date (millisecond precision) of a mission time in seconds."""
    moment = MISSION_EPOCH + timedelta(seconds=float(seconds))
    return moment.isoformat(timespec="milliseconds")
