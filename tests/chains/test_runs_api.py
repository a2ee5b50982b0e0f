"""Cancel, re-run and logs through the runs API."""

from __future__ import annotations

import time
from typing import Any

from tests.chains.conftest import local_store


def _wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_cancel_then_rerun_keeps_the_old_run(runs: Any, observation_factory: Any) -> None:
    l0, _ = observation_factory()
    first = runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))
    cancelled = runs.http.post(
        f"{runs.url}/mxt/runs/{first['run_id']}/cancel", json={}, auth=runs.stack.auth
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    old = runs.wait(first["run_id"])
    assert old["state"] == "cancelled" and old["reason"] == "cancelled by the operator"
    # nothing of the cancelled run is left waiting, and nothing more is dispatched
    assert {t["state"] for t in old["tasks"]} <= {"succeeded", "cancelled"}
    again = runs.http.post(
        f"{runs.url}/mxt/runs/{first['run_id']}/cancel", json={}, auth=runs.stack.auth
    )
    assert again.status_code == 409

    response = runs.http.post(
        f"{runs.url}/mxt/runs/{first['run_id']}/rerun",
        json={"config": {"lightcurve": {"min_counts": 30}}},
        auth=runs.stack.auth,
    )
    assert response.status_code == 201, response.text
    new = runs.wait(response.json()["run_id"])
    assert new["state"] == "succeeded"
    assert new["run_id"] != old["run_id"] and new["parent_run_id"] == old["run_id"]
    assert new["config_version"] != old["config_version"]
    new_products = runs.products(new["run_id"])
    assert all(p["key"].startswith(f"{new['run_id']}/") for p in new_products)
    lightcurve = next(p for p in new_products if p["name"] == "lightcurve")
    assert lightcurve["provenance"]["config"]["min_counts"] == 30
    # the old run keeps its (partial) products, under its own keys, unchanged
    old_products = runs.products(first["run_id"])
    assert old_products and all(p["partial"] for p in old_products)
    store = local_store(runs.stack.data_dir)
    for product in old_products:
        assert product["key"].startswith(f"{old['run_id']}/")
        assert store.head(product["bucket"], product["key"]).sha256 == product["sha256"]


def test_logs_are_retrievable_by_task_and_level(runs: Any, observation_factory: Any) -> None:
    l0, _ = observation_factory()
    run = runs.wait(runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"])
    bricks = {t["brick"] for t in run["tasks"]}
    wanted = {f"brick-{b}" for b in bricks}

    def all_bricks_logged() -> list[dict[str, Any]] | None:
        found = runs.logs(run["run_id"])
        return found if wanted <= {x["function"] for x in found} else None

    lines = _wait_for(all_bricks_logged)
    assert lines, "brick functions' log lines never reached the run's log"
    assert all(x["run_id"] == run["run_id"] for x in lines)
    assert {"time", "level", "task_id", "function", "call_id", "message"} <= set(lines[0])
    detect = runs.logs(run["run_id"], task="detect")
    assert detect and all(x["task_id"].endswith(".detect") for x in detect)
    assert any(x["function"] == "orchestrator-advance" for x in detect)
    assert all(
        x["level"] in ("WARNING", "ERROR", "CRITICAL")
        for x in runs.logs(run["run_id"], level="WARNING")
    )


def test_logs_follow_streams_until_the_run_ends(runs: Any, observation_factory: Any) -> None:
    import json

    l0, _ = observation_factory()
    run_id = runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"]
    events: list[tuple[str, Any]] = []
    with runs.http.stream(
        "GET", f"{runs.url}/mxt/runs/{run_id}/logs", params={"follow": "true"}, timeout=120
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    assert events[-1] == ("end", {"state": "succeeded"})
    logged = [data for kind, data in events if kind == "log"]
    assert logged and all(x["run_id"] == run_id for x in logged)
    assert len({x["id"] for x in logged}) == len(logged), "a line was streamed twice"
