"""The ToO chain through the gateway and NATS, against the in-process pipeline."""

from __future__ import annotations

from typing import Any


def test_too_run_completes_with_every_product(runs: Any, observation_factory: Any) -> None:
    l0, truth = observation_factory()
    obs_id = l0[0].header["OBS_ID"]
    response = runs.start(runs.upload_raw(l0, obs_id))
    assert response.status_code == 201, response.text
    run = runs.wait(response.json()["run_id"])
    assert run["state"] == "succeeded", (run["reason"], [(t["brick"], t["state"], t["error"]) for t in run["tasks"]])
    assert {t["state"] for t in run["tasks"]} == {"succeeded"}
    names = {p["name"] for p in runs.products(run["run_id"])}
    assert {"notice_json", "position", "ql_image", "src_pha", "expmap"} <= names
