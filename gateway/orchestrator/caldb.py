"""CALDB files of a run, resolved once when it starts and recorded with it.

Each codename the programme's bricks need is resolved by the ``caldb-query``
function (``quzcif`` semantics: valid at the observation's date, matching
boundaries, newest validity start, quality 0), unless the request overrides it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from bricks.errors import BadInput, MxtError, NotFound
from gateway.orchestrator.raw import RawObservation

CALDB_BUCKET = "caldb"
CALDB_QUERY_FUNCTION = "caldb-query"


class _Invoker(Protocol):
    async def invoke(self, function: str, body: dict[str, Any]) -> Any: ...


class _Request(Protocol):
    caldb: dict[str, str]
    caldb_date: str | None


async def resolve_caldb(
    gateway: _Invoker,
    store: Any,
    codenames: list[str],
    observation: RawObservation,
    request: _Request,
) -> dict[str, dict[str, Any]]:
    """``codename → {"ref", "sha256"}`` for every codename a run needs.

    Raises
    ------
    BadInput
        An override names a codename the programme does not use, or a missing file.
    NotFound
        The CALDB has no valid file for a codename at that date.
    """
    unknown = sorted(set(request.caldb) - set(codenames))
    if unknown:
        raise BadInput(f"caldb override(s) {unknown} are not used; codenames: {codenames}")
    date, time = _validity(observation, request.caldb_date)
    queried = [c for c in codenames if c not in request.caldb]
    answers = await asyncio.gather(*(_query(gateway, codename, date, time) for codename in queried))
    resolved = dict(zip(queried, answers, strict=True))
    for codename, ref in request.caldb.items():
        resolved[codename] = _override(store, codename, ref)
    return dict(sorted(resolved.items()))


def _validity(observation: RawObservation, caldb_date: str | None) -> tuple[str, str]:
    if caldb_date:
        return caldb_date, "00:00:00"
    date, _, time = observation.date_obs.partition("T")
    return date, (time or "00:00:00")[:8]


async def _query(gateway: _Invoker, codename: str, date: str, time: str) -> dict[str, Any]:
    try:
        answer = await gateway.invoke(
            CALDB_QUERY_FUNCTION,
            {"instrument": "MXT", "codename": codename, "date": date, "time": time},
        )
    except NotFound as exc:
        raise NotFound(
            f"no CALDB file for {codename} valid at {date} {time}: {exc.reason}"
        ) from None
    except MxtError:
        raise
    return _ref_of(codename, answer)


def _ref_of(codename: str, answer: Any) -> dict[str, Any]:
    """The object reference and checksum in a ``caldb-query`` answer."""
    item = answer
    if isinstance(answer, dict) and isinstance(answer.get("files"), list):
        item = answer["files"][0] if answer["files"] else None
    if isinstance(answer, list):
        item = answer[0] if answer else None
    if not isinstance(item, dict) or not (item.get("key") or item.get("object_key")):
        raise NotFound(f"caldb-query found no file for {codename}")
    key = item.get("key") or item.get("object_key")
    sha256 = item.get("sha256") or item.get("checksum")
    ref = key if key.startswith(f"{CALDB_BUCKET}/") else f"{CALDB_BUCKET}/{key}"
    return {"ref": ref, "sha256": sha256}


def _override(store: Any, codename: str, ref: str) -> dict[str, Any]:
    bucket, _, key = ref.partition("/")
    if bucket != CALDB_BUCKET or not key:
        raise BadInput(f"caldb override for {codename}: {ref!r} is not caldb/<key>")
    try:
        info = store.head(bucket, key)
    except NotFound:
        raise BadInput(f"caldb override for {codename}: no object {ref}") from None
    return {"ref": ref, "sha256": info.sha256}
