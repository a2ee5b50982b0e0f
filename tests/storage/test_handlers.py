"""Every storage function through its ASGI app: codes; bad input refused, nothing written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.runtime import create_app
from gateway.runtime.limits import RuntimeLimits
from storage.db.engine import get_engine
from storage.objects import get_store
from storage.settings import get_settings

from .caldb_files import caldb_file

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
LIMITS = RuntimeLimits(max_body_bytes=256 * 1024)
HOSTILE_KEYS = ["../x", "/etc/passwd", "a\x00b", "a//b", "x\\y"]
SQL = "x'; DROP TABLE observations; --"
DAG = [{"brick": "ingest"}, {"brick": "calibrate", "needs": ["ingest"]}]


def _clear_caches() -> None:
    for engine_url in list(getattr(get_engine, "_cached", [])):
        engine_url.dispose()
    get_settings.cache_clear()
    get_store.cache_clear()
    get_engine.cache_clear()


@pytest.fixture()
def stack(migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment a function process gets: data dir, database, local store."""
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MXT_DATABASE_URL", migrated_url)
    monkeypatch.setenv("MXT_OBJECT_STORE", "local")
    monkeypatch.setenv("MXT_AUTO_MIGRATE", "false")  # migrated_url is at head already
    monkeypatch.delenv("MXT_NATS_URL", raising=False)
    monkeypatch.delenv("MXT_PUBLISH_STORAGE_EVENTS", raising=False)
    _clear_caches()
    yield
    get_engine().dispose()
    _clear_caches()


@pytest.fixture()
def call(stack: None):
    """``call(function)`` → a TestClient on that function's ASGI app."""
    clients: list[TestClient] = []

    def client(name: str) -> TestClient:
        test_client = TestClient(create_app(FUNCTIONS / name, name, LIMITS))
        clients.append(test_client)
        return test_client

    yield client
    for test_client in clients:
        test_client.close()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert "reason" in body
    for word in words:
        assert word in json.dumps(body), (word, body)


def configs(call) -> list:
    return call("configdb-list").get("/").json()["configs"]


# -- configdb -------------------------------------------------------------------------
def test_configdb_put_get_activate(call):
    put = call("configdb-put")
    created = put.post("/", json={"programme": "ToO", "dag": DAG})
    assert created.status_code == 201 and created.json()["version"] == 1
    assert put.post("/", json={"programme": "ToO", "dag": DAG}).status_code == 200
    huge = put.post("/", json={"programme": "ToO", "dag": DAG, "version": 2**40})
    assert_error(huge, 422, "version")
    conflict = put.post("/", json={"programme": "ToO", "dag": DAG[:1], "version": 1})
    assert_error(conflict, 409, "immutable")
    get = call("configdb-get")
    assert_error(get.get("/", params={"programme": "ToO"}), 404, "no active")
    activated = call("configdb-activate").post("/", json={"programme": "ToO", "version": 1})
    assert activated.status_code == 200 and activated.json()["active"] is True
    assert get.get("/", params={"programme": "ToO"}).json()["version"] == 1
    assert_error(get.get("/", params={"programme": "ToO", "version": 7}), 404, "version 7")
    history = call("configdb-list").get("/", params={"programme": "ToO"}).json()
    assert [a["version"] for a in history["activations"]] == [1]


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        (b"{not json", 400, "JSON"),
        (b'["a list"]', 422, ""),
        (json.dumps({"programme": "ToO", "dag": DAG, "colour": 1}).encode(), 422, "colour"),
        (json.dumps({"programme": 7, "dag": DAG}).encode(), 422, "programme"),
        (json.dumps({"programme": "ToO", "dag": "ingest"}).encode(), 422, "dag"),
        (json.dumps({"programme": "ToO", "dag": [{"brick": "../x"}]}).encode(), 422, "brick"),
        (json.dumps({"programme": "ToO", "dag": DAG, "comment": "x" * 300_000}).encode(), 413, ""),
    ],
)
def test_configdb_put_bad_input_writes_nothing(call, body, status, word):
    response = call("configdb-put").post(
        "/", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, status, word)
    assert configs(call) == []


def test_configdb_activate_unknown_version(call):
    assert_error(
        call("configdb-activate").post("/", json={"programme": "GP", "version": 3}), 404, "GP"
    )
    assert_error(call("configdb-get").get("/", params={"programme": "XX"}), 422, "programme")


# -- missiondb ------------------------------------------------------------------------
OBSERVATION = {"obs_id": "obs-1", "programme": "ToO", "raw_key": "obs-1/l0.fits"}


def observations(call) -> list:
    return call("missiondb-query").get("/", params={"entity": "observations"}).json()["items"]


def test_observation_register_and_get(call):
    register = call("missiondb-register-observation")
    body = {**OBSERVATION, "object_name": SQL}
    assert register.post("/", json=body).status_code == 201
    assert register.post("/", json=body).status_code == 200
    assert_error(register.post("/", json={**body, "raw_key": "obs-1/other.fits"}), 409, "raw_key")
    got = call("missiondb-get-observation").get("/", params={"obs_id": "obs-1"})
    assert got.json()["object_name"] == SQL  # stored verbatim, harmless
    assert_error(call("missiondb-get-observation").get("/", params={"obs_id": "nope"}), 404)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_observation_hostile_raw_key(call, key):
    response = call("missiondb-register-observation").post(
        "/", json={**OBSERVATION, "raw_key": key}
    )
    assert 400 <= response.status_code < 500
    assert "key" in response.text
    assert observations(call) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("obs_id", SQL),
        ("obs_id", 12),
        ("ra", "east"),
        ("dec", 91),
        ("tstart", "yesterday"),
        ("tstart", "2026-01-01T00:00:00"),  # no time zone
        ("object_name", "nul\x00byte"),  # PostgreSQL text cannot hold it
        ("object_name", "x" * 129),
        ("unknown_field", 1),
    ],
)
def test_observation_bad_fields_named(call, field, value):
    response = call("missiondb-register-observation").post("/", json={**OBSERVATION, field: value})
    assert_error(response, 422, field)
    assert observations(call) == []


def test_query_runs_products_logs(call):
    call("missiondb-register-observation").post("/", json=OBSERVATION)
    run = call("missiondb-create-run").post(
        "/", json={"run_id": "r1", "obs_id": "obs-1", "programme": "ToO", "bricks": ["ingest"]}
    )
    assert run.status_code == 201
    product = {
        "run_id": "r1",
        "task_id": "r1.ingest",
        "name": "obs_meta",
        "key": "r1/ingest/obs_meta.json",
        "sha256": "0" * 64,
        "size": 10,
        "provenance": {"brick": "ingest", "brick_version": "1"},
    }
    assert call("missiondb-register-product").post("/", json=product).status_code == 201
    assert_error(
        call("missiondb-register-product").post("/", json={**product, "run_id": "r9"}), 404, "r9"
    )
    logs = call("missiondb-append-logs").post(
        "/",
        json={
            "lines": [
                {"time": "2026-01-01T00:00:00Z", "level": "INFO", "message": SQL, "run_id": "r1"},
                {
                    "time": "2026-01-01T00:00:01Z",
                    "level": "ERROR",
                    "message": "boom",
                    "run_id": "r1",
                },
            ]
        },
    )
    assert logs.status_code == 201 and logs.json() == {"stored": 2}
    query = call("missiondb-query")
    tasks = query.get("/", params={"entity": "tasks", "run_id": "r1"}).json()["items"]
    assert [t["task_id"] for t in tasks] == ["r1.ingest"]
    errors = query.get("/", params={"entity": "logs", "run_id": "r1", "level": "ERROR"}).json()
    assert [m["message"] for m in errors["items"]] == ["boom"]
    posted = query.post("/", json={"entity": "products", "filters": {"run_id": "r1"}}).json()
    assert posted["items"][0]["provenance"]["brick"] == "ingest"
    assert_error(query.get("/", params={"entity": "runs", "colour": "red"}), 422, "colour")
    assert_error(query.get("/", params={"entity": "runs", "limit": "many"}), 422, "limit")
    assert_error(query.get("/", params={"entity": "passwords"}), 422, "entity")


# -- caldb ----------------------------------------------------------------------------
def caldb_rows(call) -> list:
    return call("caldb-list").get("/").json()["datasets"]


def test_caldb_ingest_query_download(call):
    ingest = call("caldb-ingest")
    data = caldb_file()
    created = ingest.post(
        "/",
        content=data,
        params={"filename": "mxt_gain_v1.fits"},
        headers={"content-type": "application/fits"},
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key == "data/svom/mxt/bcf/gain/mxt_gain_v1.fits"
    again = ingest.post("/", content=data, params={"filename": "mxt_gain_v1.fits"})
    assert again.status_code == 200
    query = call("caldb-query").get(
        "/",
        params={
            "codename": "GAIN",
            "date": "2025-01-01",
            "time": "00:00:00",
            "boundaries": "TEMP(-65)C",
        },
    )
    assert query.status_code == 200 and query.json()["files"][0]["key"] == key
    assert_error(
        call("caldb-query").get("/", params={"codename": "GAIN", "date": "2020-01-01"}), 404, "GAIN"
    )
    download = call("caldb-download").get("/", params={"key": key})
    assert download.status_code == 200 and download.content == data
    assert download.headers["x-checksum-sha256"] == created.json()["sha256"]
    assert_error(call("caldb-download").get("/", params={"key": "data/none.fits"}), 404)
    bad = call("caldb-set-quality").post("/", json={"key": key, "quality": 5})
    assert bad.json()["extensions"] == 1
    assert_error(call("caldb-query").get("/", params={"codename": "GAIN"}), 404)


def test_caldb_ingest_stored_key(call):
    get_store().put("caldb", "incoming/qe.fits", caldb_file(codename="QE"))
    response = call("caldb-ingest").post("/", json={"key": "incoming/qe.fits"})
    assert response.status_code == 201
    assert response.json()["key"] == "data/svom/mxt/bcf/qe/qe.fits"


@pytest.mark.parametrize(
    ("kwargs", "status", "word"),
    [
        (
            {"content": caldb_file(drop="CVSD0001"), "params": {"filename": "g.fits"}},
            422,
            "CVSD0001",
        ),
        ({"content": b"garbage" * 100, "params": {"filename": "g.fits"}}, 422, "FITS"),
        ({"content": caldb_file(), "params": {"filename": "../g.fits"}}, 400, "filename"),
        ({"content": caldb_file(), "params": {"quality": "bad"}}, 400, "quality"),
        ({"content": caldb_file(), "params": {"colour": "red"}}, 400, "colour"),
        ({"content": b""}, 400, "body"),
        ({"json": {"key": "../../etc/passwd"}}, 400, "key"),
        ({"json": {"key": "incoming/missing.fits"}}, 404, "missing"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"content": b"\0" * 300_000}, 413, ""),
    ],
)
def test_caldb_ingest_bad_input_writes_nothing(call, kwargs, status, word):
    assert_error(call("caldb-ingest").post("/", **kwargs), status, word)
    assert caldb_rows(call) == []
    assert get_store().list("caldb").items == []


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"codename": "GAIN", "date": "01/01/2025"}, "date"),
        ({"codename": "GAIN", "boundaries": "TEMP"}, "TEMP"),
        ({"date": "now"}, "codename"),
        ({"codename": "GAIN", "extra": "1"}, "extra"),
    ],
)
def test_caldb_query_bad_input(call, params, word):
    response = call("caldb-query").get("/", params=params)
    assert response.status_code in (400, 422)
    assert word in response.text


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_caldb_download_hostile_key(call, key):
    response = call("caldb-download").get("/", params={"key": key})
    assert 400 <= response.status_code < 500 and response.status_code != 404


# -- objects --------------------------------------------------------------------------
def test_upload_publishes_minio_shaped_event(call, nats_server, monkeypatch):
    monkeypatch.setenv("MXT_NATS_URL", nats_server.url)
    get_settings.cache_clear()
    data = b"SIMPLE  = T" * 1000
    response = call("objects-upload").post(
        "/",
        content=data,
        params={"key": "obs-7/l0.fits"},
        headers={"content-type": "application/fits"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["event_published"] is True
    event = asyncio.run(_last_storage_event(nats_server.url))
    record = event["Records"][0]
    assert event["EventName"] == "s3:ObjectCreated:Put"
    assert event["Key"] == "raw/obs-7/l0.fits"
    assert record["s3"]["bucket"]["name"] == "raw"
    assert record["s3"]["object"]["key"] == "obs-7/l0.fits"
    assert record["s3"]["object"]["size"] == len(data)
    assert record["s3"]["object"]["contentType"] == "application/fits"
    download = call("objects-download").get("/", params={"bucket": "raw", "key": "obs-7/l0.fits"})
    assert download.content == data
    # the same content again is the same event (Nats-Msg-Id): the stream keeps one
    call("objects-upload").post("/", content=data, params={"key": "obs-7/l0.fits"})
    assert asyncio.run(_stream_messages(nats_server.url)) == 1


def test_upload_with_nats_down_is_retryable(call, monkeypatch):
    from local.natsd import free_port

    monkeypatch.setenv("MXT_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    response = call("objects-upload").post("/", content=b"x", params={"key": "obs-8/l0.fits"})
    assert_error(response, 503, "NATS")
    assert response.json()["kind"] == "transient"


async def _stream_messages(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("MXT_STORAGE")
        return info.state.messages
    finally:
        await nc.close()


async def _last_storage_event(url: str) -> dict:
    import nats

    nc = await nats.connect(url)
    try:
        message = await nc.jetstream().get_last_msg("MXT_STORAGE", "mxt.storage.raw")
        return json.loads(message.data)
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("params", "status", "word"),
    [({"key": k}, 400, "key") for k in HOSTILE_KEYS]
    + [
        ({}, 400, "key"),
        ({"key": "a", "bucket": "products"}, 400, "bucket"),
        ({"key": "a", "x": "1"}, 400, "x"),
    ],
)
def test_upload_bad_input_writes_nothing(call, params, status, word):
    assert_error(call("objects-upload").post("/", content=b"data", params=params), status, word)
    assert get_store().list("raw").items == []


def test_upload_too_large(call):
    response = call("objects-upload").post("/", content=b"\0" * 300_000, params={"key": "big"})
    assert_error(response, 413)
    assert get_store().list("raw").items == []


# -- every JSON operation refuses malformed, unknown, mistyped and oversized input --------
VALID_BODIES = {
    "configdb-put": {"programme": "ToO", "dag": DAG},
    "configdb-get": {"programme": "ToO"},
    "configdb-list": {"programme": "ToO"},
    "configdb-activate": {"programme": "ToO", "version": 1},
    "missiondb-register-observation": OBSERVATION,
    "missiondb-get-observation": {"obs_id": "obs-1"},
    "missiondb-query": {"entity": "runs"},
    "missiondb-create-run": {"run_id": "r1", "programme": "ToO"},
    "missiondb-register-product": {
        "run_id": "r1",
        "name": "p",
        "key": "r1/p",
        "sha256": "0" * 64,
        "size": 1,
        "provenance": {"brick": "b", "brick_version": "1"},
    },
    "missiondb-append-logs": {
        "lines": [{"time": "2026-01-01T00:00:00Z", "level": "INFO", "message": "m"}]
    },
    "caldb-query": {"codename": "GAIN"},
    "caldb-list": {"codename": "GAIN"},
    "caldb-set-quality": {"key": "data/svom/mxt/bcf/gain/g.fits", "quality": 5},
    "caldb-download": {"key": "data/svom/mxt/bcf/gain/g.fits"},
    "objects-download": {"bucket": "raw", "key": "obs-1/l0.fits"},
}


def stored_rows(url: str) -> int:
    import sqlalchemy as sa

    from storage.db.base import Base

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return sum(
                connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for table in Base.metadata.sorted_tables
            )
    finally:
        engine.dispose()


def bad_bodies(valid: dict) -> list[tuple[bytes, int, str]]:
    first = next(iter(valid))
    return [
        (b'{"truncated": ', 400, "JSON"),
        (b"[1, 2]", 422, ""),
        (json.dumps({**valid, "unexpected": 1}).encode(), 422, "unexpected"),
        (json.dumps({**valid, first: [[1]]}).encode(), 422, first),
        (json.dumps({**valid, "padding": "x" * 300_000}).encode(), 413, ""),
    ]


@pytest.mark.parametrize("function", sorted(VALID_BODIES))
def test_every_operation_refuses_bad_json(call, migrated_url, function):
    client = call(function)
    for body, status, word in bad_bodies(VALID_BODIES[function]):
        response = client.post("/", content=body, headers={"content-type": "application/json"})
        assert_error(response, status, word)
    assert stored_rows(migrated_url) == 0
    assert all(get_store().list(b).items == [] for b in ("raw", "products", "caldb", "logs"))


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_objects_download_hostile_key(call, key):
    response = call("objects-download").get("/", params={"bucket": "raw", "key": key})
    assert 400 <= response.status_code < 500 and response.status_code != 404
