"""CALDB files of a run, resolved once when it starts and recorded with it.

Each codename the programme's bricks need is resolved with the CALDB index's
``quzcif`` semantics (``storage.caldb.index.best_dataset``, the query behind the
``caldb-query`` function: valid at the observation's date, matching boundaries,
newest validity start, quality 0), unless the request overrides it with a file.
"""

from __future__ import annotations

from typing import Any, Protocol

from bricks.errors import BadInput, NotFound
from gateway.orchestrator.raw import RawObservation

CALDB_BUCKET = "caldb"


class _Request(Protocol):
    caldb: dict[str, str]
    caldb_date: str | None


def resolve_caldb(
    store: Any, codenames: list[str], observation: RawObservation, request: _Request
) -> dict[str, dict[str, Any]]:
    """``codename → {"ref", "sha256"}`` for every codename a run needs.

    Raises
    ------
    BadInput
        An override names a codename the programme does not use, or a missing file.
    NotFound
        The CALDB has no valid file for a codename at that date (named).
    """
    from storage.caldb.index import CaldbQuery, best_dataset
    from storage.db.engine import get_engine, transaction

    unknown = sorted(set(request.caldb) - set(codenames))
    if unknown:
        raise BadInput(f"caldb override(s) {unknown} are not used; codenames: {codenames}")
    date, time = validity(observation, request.caldb_date)
    resolved = {}
    with transaction(get_engine()) as db:
        for codename in codenames:
            if codename in request.caldb:
                resolved[codename] = _override(store, codename, request.caldb[codename])
                continue
            query = CaldbQuery(codename=codename, date=date, time=time)
            try:
                dataset = best_dataset(db, query)
            except NotFound as exc:
                raise NotFound(f"{exc.reason}; ingest the CALDB first (mxt caldb build)") from None
            resolved[codename] = {
                "ref": f"{dataset.bucket}/{dataset.key}",
                "sha256": dataset.sha256,
            }
    return resolved


def validity(observation: RawObservation, caldb_date: str | None) -> tuple[str, str]:
    """The date and time (``YYYY-MM-DD``, ``hh:mm:ss``) the CALDB must be valid at."""
    if caldb_date:
        return caldb_date, "00:00:00"
    date, _, time = observation.date_obs.partition("T")
    return date, (time or "00:00:00")[:8]


def _override(store: Any, codename: str, ref: str) -> dict[str, Any]:
    bucket, _, key = ref.partition("/")
    if bucket != CALDB_BUCKET or not key:
        raise BadInput(f"caldb override for {codename}: {ref!r} is not caldb/<key>")
    try:
        info = store.head(bucket, key)
    except NotFound:
        raise BadInput(f"caldb override for {codename}: no object {ref}") from None
    return {"ref": ref, "sha256": info.sha256}
