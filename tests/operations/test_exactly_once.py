"""Issue 11, exactly-once runs: concurrent first calls on a cold orchestrator, a flood of
raw arrivals right after a start, and refused arrivals as failed runs.

As found: 20 concurrent ``POST /mxt/runs`` on a fresh orchestrator gave 5 × HTTP 500
(the queue dispatcher's unlocked lazy initialisation), each leaving an orphan run; 30
raw files uploaded at once right after a start left 5 runs ``running`` for ever; a
not-FITS arrival left no run at all, only a status in a KV bucket.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from local.chainkit import fits_bytes
from tests.chains.conftest import RunsClient
from tests.operations.conftest import arrive, wait_for


def _all_ended(runs: RunsClient, run_ids: list[str], timeout: float = 120.0) -> list[dict]:
    return [runs.wait(run_id, timeout) for run_id in run_ids]


def test_concurrent_first_submissions_all_run(cold_stack: Any, observation_factory: Any) -> None:
    runs = RunsClient(cold_stack)
    raws = []
    for seed in range(20):
        l0, _ = observation_factory(seed=seed + 1)
        raws.append(runs.upload_raw(l0, l0[0].header["OBS_ID"]))
    # the stack's orchestrator has answered nothing yet: these are its first calls
    with ThreadPoolExecutor(len(raws)) as pool:
        answers = list(pool.map(runs.start, raws))
    statuses = [a.status_code for a in answers]
    print(f"20 concurrent submissions on a cold orchestrator: statuses {sorted(statuses)}")
    assert statuses == [201] * 20, [a.text for a in answers if a.status_code != 201]
    ended = _all_ended(runs, [a.json()["run_id"] for a in answers])
    states = [run["state"] for run in ended]
    print(f"their runs: {states.count('succeeded')} succeeded of {len(states)}")
    assert states == ["succeeded"] * 20, [r["reason"] for r in ended if r["state"] != "succeeded"]


def test_thirty_arrivals_right_after_a_start_all_run(
    cold_stack: Any, observation_factory: Any
) -> None:
    runs = RunsClient(cold_stack)
    first, _ = observation_factory(seed=40)
    started = runs.started(runs.upload_raw(first, first[0].header["OBS_ID"]))
    files = []
    for seed in range(30):
        l0, _ = observation_factory(seed=seed + 50)
        obs_id = l0[0].header["OBS_ID"]
        files.append((obs_id, f"{obs_id}/{obs_id}_mxt_l0.fits", fits_bytes(l0)))
    # the raw-arrived function is cold too: its first 30 events at once
    with ThreadPoolExecutor(len(files)) as pool:
        list(pool.map(lambda f: arrive(runs, f[1], f[2]), files))

    def arrived_runs() -> list[str] | None:
        found = []
        for obs_id, _, _ in files:
            page = runs.http.get(f"{runs.url}/mxt/runs", params={"obs_id": obs_id}).json()
            if not page["items"]:
                return None
            found.append(page["items"][0]["run_id"])
        return found

    run_ids = wait_for(arrived_runs, 60)
    assert run_ids, "not every arrival started a run"
    ended = _all_ended(runs, [started["run_id"], *run_ids])
    states = [run["state"] for run in ended]
    print(f"1 start + 30 arrivals at once: {states.count('succeeded')} succeeded of {len(states)}")
    assert states == ["succeeded"] * 31, [r["reason"] for r in ended if r["state"] != "succeeded"]


def test_refused_arrivals_are_failed_runs_with_their_reason(cold_stack: Any) -> None:
    runs = RunsClient(cold_stack)
    arrive(runs, "misc/notes.txt", b"not an observation")
    arrive(runs, "junk/junk_mxt_l0.fits", b"GIF89a" + bytes(4000))

    def failed_with(key: str) -> dict[str, Any] | None:
        page = runs.http.get(f"{runs.url}/mxt/runs", params={"state": "failed"}).json()
        return next((r for r in page["items"] if key in (r.get("reason") or "")), None)

    for key, why in (
        ("raw/misc/notes.txt", "not a FITS file"),
        ("raw/junk/junk_mxt_l0.fits", "does not start with a FITS primary header"),
    ):
        run = wait_for(lambda key=key: failed_with(key), 30)
        assert run is not None, f"no failed run for the refused arrival {key}"
        print(f"refused arrival {key}: run {run['run_id']} failed: {run['reason']}")
        assert why in run["reason"]
        # on the run's own page too, with no task left open
        assert runs.run(run["run_id"])["state"] == "failed"


def test_a_repeated_start_redispatches_what_is_missing(
    cold_stack: Any, observation_factory: Any
) -> None:
    """As found: a retried arrival returned the existing run without re-dispatching.

    The first dispatch is lost for real (its call id already taken in
    ``MXT_CALL_STATUS``, so the queue drops it; then that status is deleted); the
    stall watchdog is 300 s away here, so only the repeated start can rescue the run.
    """
    import asyncio
    import secrets

    from tests.operations.test_watchdog import _status_bucket

    runs = RunsClient(cold_stack)
    l0, _ = observation_factory(seed=8)
    raw = runs.upload_raw(l0, l0[0].header["OBS_ID"])
    run_id = f"r-again-{secrets.token_hex(3)}"
    lost = f"{run_id}_ingest_1"
    asyncio.run(_status_bucket(cold_stack.nats_url, "take", lost))
    first = runs.started(raw, run_id=run_id)
    asyncio.run(_status_bucket(cold_stack.nats_url, "delete", lost))
    assert first["state"] == "running"
    again = runs.started(raw, run_id=run_id)  # the same event delivered again
    assert again["run_id"] == run_id
    run = runs.wait(run_id, timeout=60)
    print(f"repeated start after a lost dispatch: run {run['state']}")
    assert run["state"] == "succeeded", run
