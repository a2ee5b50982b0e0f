"""Each programme's chain through the gateway and NATS equals the in-process pipeline."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chains.conftest import ALERT_DATETIME, reference_digests, stored_digests

PROGRAM_HEADER = {
    "ToO": "TargetOfOpportunity-Nom",
    "CP": "CoreProgram",
    "GP": "GeneralProgram",
}


def describe(run: dict[str, Any]) -> Any:
    return run["reason"], [(t["brick"], t["state"], t["error"]) for t in run["tasks"]]


@pytest.mark.parametrize("programme", ["ToO", "CP", "GP"])
def test_programme_chain_equals_in_process_pipeline(
    programme: str, runs: Any, observation_factory: Any
) -> None:
    l0, _truth = observation_factory(program=PROGRAM_HEADER[programme])
    obs_id = l0[0].header["OBS_ID"]
    overrides = {"notice": {"alert_datetime": ALERT_DATETIME}} if programme != "GP" else {}
    # no programme given: the PROGRAM header chooses it
    response = runs.start(runs.upload_raw(l0, obs_id), config=overrides)
    assert response.status_code == 201, response.text
    assert response.json()["programme"] == programme
    run = runs.wait(response.json()["run_id"])
    assert run["state"] == "succeeded", describe(run)
    products = runs.products(run["run_id"])
    names = [p["name"] for p in products]
    assert len(names) == len(set(names)), "a product was registered twice"
    assert stored_digests(runs.stack, products) == reference_digests(l0, programme)
    assert ("notice_json" in names) == (programme != "GP")


def test_every_product_has_complete_provenance(runs: Any, observation_factory: Any) -> None:
    l0, _ = observation_factory()
    response = runs.start(runs.upload_raw(l0, l0[0].header["OBS_ID"]), programme="ToO")
    run = runs.wait(response.json()["run_id"])
    assert run["state"] == "succeeded", describe(run)
    caldb = {c: f["sha256"] for c, f in run["caldb_files"].items()}
    for product in runs.products(run["run_id"]):
        prov = product["provenance"]
        brick = product["task_id"].rpartition(".")[2]
        assert prov["brick"] == brick and prov["brick_version"]
        assert prov["run_id"] == run["run_id"]
        assert prov["task_id"] == product["task_id"]
        assert prov["config_version"] == run["config_version"]
        assert prov["started_at"] <= prov["finished_at"]
        assert prov["inputs"], f"{product['name']} records no inputs"
        for item in prov["inputs"]:
            assert len(item["sha256"]) == 64 and item["ref"].startswith(("raw/", "products/"))
        for item in prov["caldb_files"]:
            assert caldb[item["codename"]] == item["sha256"]
        assert product["key"].startswith(f"{run['run_id']}/{brick}/")
