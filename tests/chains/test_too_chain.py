"""The ToO chain: notice alert on NATS, run events, raw-bucket trigger, per-programme entry."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats

from gateway.events import ALERT_SUBJECT
from storage.events import publish_object_created
from tests.chains.conftest import local_store


async def _collect(nats_url: str, subjects: list[str], until: Any, timeout: float) -> list[Any]:
    """Messages on ``subjects`` (core subscriptions) while ``until()`` runs."""
    nc = await nats.connect(nats_url)
    seen: list[Any] = []

    async def keep(msg: Any) -> None:
        seen.append((msg.subject, msg.data))

    for subject in subjects:
        await nc.subscribe(subject, cb=keep)
    await asyncio.wait_for(asyncio.to_thread(until), timeout)
    await asyncio.sleep(0.3)
    await nc.drain()
    return seen


def test_too_notice_and_events_are_published(runs: Any, observation_factory: Any) -> None:
    l0, truth = observation_factory()
    raw = runs.upload_raw(l0, l0[0].header["OBS_ID"])
    started: dict[str, Any] = {}

    def run_it() -> None:
        started.update(runs.started(raw))
        started.update(runs.wait(started["run_id"]))

    seen = asyncio.run(_collect(runs.stack.nats_url, [ALERT_SUBJECT, "mxt.events.>"], run_it, 120))
    assert started["state"] == "succeeded"
    run_id = started["run_id"]
    notices = [json.loads(data) for subject, data in seen if subject == ALERT_SUBJECT]
    assert len(notices) == 1
    assert notices[0]["instrument"] == "MXT" and -90 <= notices[0]["dec"] <= 90
    kinds = {subject.split(".")[2] for subject, _ in seen if subject.endswith(run_id)}
    assert {"run", "task", "product", "alert", "log"} <= kinds
    states = [json.loads(d)["state"] for s, d in seen if s == f"mxt.events.run.{run_id}"]
    assert states == ["running", "succeeded"]


def test_raw_bucket_arrival_starts_a_run(runs: Any, observation_factory: Any) -> None:
    l0, _ = observation_factory(program="TargetOfOpportunity-Ex")
    obs_id = l0[0].header["OBS_ID"]
    runs.upload_raw(l0, obs_id)
    info = local_store(runs.stack.data_dir).head("raw", f"{obs_id}/{obs_id}_mxt_l0.fits")
    asyncio.run(publish_object_created(runs.stack.nats_url, info))
    # the same event again (MinIO retries its notifications): still one run
    asyncio.run(publish_object_created(runs.stack.nats_url, info))
    deadline = time.monotonic() + 60
    while True:
        page = runs.http.get(f"{runs.url}/mxt/runs", params={"obs_id": obs_id}).json()
        if page["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(page["items"]) == 1, page
    run = runs.wait(page["items"][0]["run_id"])
    assert run["programme"] == "ToO" and run["state"] == "succeeded"
    time.sleep(1.0)
    again = runs.http.get(f"{runs.url}/mxt/runs", params={"obs_id": obs_id}).json()
    assert len(again["items"]) == 1


def test_programme_entry_point_overrides_the_header(runs: Any, observation_factory: Any) -> None:
    l0, _ = observation_factory(program="TargetOfOpportunity-Nom")
    raw = runs.upload_raw(l0, l0[0].header["OBS_ID"])
    response = runs.http.post(
        f"{runs.url}/mxt_gp_pipeline/runs", json={"raw_key": raw}, auth=runs.stack.auth
    )
    assert response.status_code == 201, response.text
    run = runs.wait(response.json()["run_id"])
    assert run["programme"] == "GP" and run["state"] == "succeeded"
    assert "notice" not in {t["brick"] for t in run["tasks"]}


def test_bad_requests_get_precise_errors(runs: Any) -> None:
    missing = runs.start("raw/nobody/none_mxt_l0.fits")
    assert missing.status_code == 404 and "none_mxt_l0.fits" in missing.text
    bad_field = runs.http.post(
        f"{runs.url}/mxt/runs", json={"raw_key": "x", "colour": 1}, auth=runs.stack.auth
    )
    assert bad_field.status_code == 422 and "colour" in bad_field.text
    unauthenticated = runs.http.post(f"{runs.url}/mxt/runs", json={"raw_key": "x"})
    assert unauthenticated.status_code == 401
    unknown = runs.http.get(f"{runs.url}/mxt/runs/r-19990101t000000-abcdef")
    assert unknown.status_code == 404
