"""The storage functions behind the gateway: resource routes, basic auth on writes, files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.stack import EmbeddedStack

from .caldb_files import caldb_file
from .stack_files import write_storage_stack

FUNCTIONS = [
    "configdb-put",
    "configdb-get",
    "configdb-activate",
    "missiondb-query",
    "caldb-ingest",
    "caldb-query",
    "caldb-download",
]
DAG = [{"brick": "ingest"}, {"brick": "calibrate", "needs": ["ingest"]}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    work: Path = tmp_path_factory.mktemp("storage-stack")
    stack_file = write_storage_stack(work / "stack.yml", FUNCTIONS)
    env = {"MXT_OBJECT_STORE": "local", "MXT_DATABASE_URL": f"sqlite:///{work / 'mxt.db'}"}
    with EmbeddedStack(stack_file, work / "data", env=env).start(timeout=180) as running:
        yield running


@pytest.fixture()
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        yield client


def test_configdb_routes_and_auth(stack: EmbeddedStack, http: httpx.Client):
    route = "/mxt_configdb/programmes/ToO/versions"
    assert http.post(route, json={"dag": DAG}).status_code == 401
    created = http.post(route, json={"dag": DAG}, auth=stack.auth)
    assert created.status_code == 201, created.text
    assert created.json()["programme"] == "ToO"  # from the path
    again = http.post(route, json={"dag": DAG}, auth=stack.auth)
    assert again.status_code == 200
    assert http.get("/mxt_configdb/programmes/ToO").status_code == 404
    activate = "/mxt_configdb/programmes/ToO/active"
    assert http.put(activate, json={"version": 1}).status_code == 401
    assert http.put(activate, json={"version": 1}, auth=stack.auth).status_code == 200
    active = http.get("/mxt_configdb/programmes/ToO")
    assert active.status_code == 200 and active.json()["version"] == 1
    missing = http.get("/mxt_configdb/programmes/ToO/versions/9")
    assert missing.status_code == 404 and "version 9" in missing.json()["reason"]


def test_caldb_ingest_query_download(stack: EmbeddedStack, http: httpx.Client):
    data = caldb_file()
    ingest = "/function/caldb-ingest"
    assert http.post(ingest, content=data, params={"filename": "g.fits"}).status_code == 401
    created = http.post(ingest, content=data, params={"filename": "g.fits"}, auth=stack.auth)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    found = http.get("/caldb/query", params={"codename": "GAIN", "boundaries": "TEMP(-65)C"})
    assert found.status_code == 200 and found.json()["files"][0]["key"] == key
    download = http.get("/caldb/download", params={"key": key})
    assert download.status_code == 200 and download.content == data
    assert http.get("/caldb/download", params={"key": "../etc/passwd"}).status_code == 400


def test_missiondb_query_route_names_bad_filter(http: httpx.Client):
    response = http.get("/mxt_missiondb/runs", params={"state": "bogus"})
    assert response.status_code == 422 and "state" in response.text
    assert http.get("/mxt_missiondb/runs").json()["items"] == []
