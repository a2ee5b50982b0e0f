"""The orchestrator's state machine on a real database (SQLite and PostgreSQL) and a real
HTTP endpoint standing in for the gateway's ``/async-function``: fan-in under concurrent
completions, redelivered completions, programme validation, configdb seeding."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bricks.errors import BadInput
from bricks.registry import get_brick
from bricks.simulate import simulate
from gateway.events import EventPublisher
from gateway.messages import CallCompleted
from gateway.orchestrator.dispatch import GatewayClient
from gateway.orchestrator.programme import build_dag, builtin_programme_files
from gateway.orchestrator.service import Orchestrator, StartRun
from local.chainkit import fits_bytes, prepare_data_dir
from storage.configdb import ConfigSpec, load_yaml_specs
from tests.chains.conftest import small_scene


class AsyncEndpoint:
    """An HTTP server answering ``/async-function/<name>`` with 202, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        async def accept(request: web.Request) -> web.Response:
            self.calls.append((request.match_info["name"], request.headers["X-Call-Id"]))
            return web.Response(status=202)

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/async-function/{name}", accept)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    def start(self) -> AsyncEndpoint:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture()
def orchestration(
    database_url: str, tmp_path: Path, nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[AsyncEndpoint, str]]:
    """A migrated database with the model CALDB, a raw file, and a recording endpoint."""
    from gateway.orchestrator import service
    from storage import objects, settings
    from storage.db import engine

    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MXT_DATABASE_URL", database_url)
    # settings, engine and store are built once per process: rebuild them for this database
    caches = (settings.get_settings, engine.get_engine, objects.get_store)
    for cached in caches:
        cached.cache_clear()
    service._DAGS.clear()
    service._SEEDED.clear()
    prepare_data_dir(tmp_path, database_url)
    l0, _ = simulate(small_scene("fanin"))
    objects.get_store().put("raw", "fanin/fanin_mxt_l0.fits", fits_bytes(l0))
    endpoint = AsyncEndpoint().start()
    yield endpoint, nats_server.url
    for cached in caches:
        cached.cache_clear()


def completion(run_id: str, brick: str, attempt: int = 1) -> CallCompleted:
    """The completion of a brick call that made its declared outputs."""
    declared = get_brick(brick)
    body = {
        "brick": brick,
        "version": declared.version,
        "outputs": {
            p.name: {
                "ref": f"products/{run_id}/{brick}/{p.filename}",
                "sha256": hashlib.sha256(p.name.encode()).hexdigest(),
                "size": 1,
            }
            for p in declared.outputs
        },
        "provenance": {"brick": brick, "brick_version": declared.version},
    }
    return CallCompleted(
        call_id=f"{run_id}_{brick}_{attempt}",
        function=f"brick-{brick}",
        state="succeeded",
        status_code=200,
        attempts=1,
        duration=0.01,
        body_b64=base64.b64encode(orjson.dumps(body)).decode(),
    )


def orchestrator(endpoint: AsyncEndpoint, nats_url: str) -> Orchestrator:
    return Orchestrator(GatewayClient(endpoint.url), EventPublisher(nats_url))


def using_orchestrator(endpoint: AsyncEndpoint, nats_url: str, act: Any) -> Any:
    """``act(orchestrator)`` on an orchestrator of its own (a process), clients closed after."""

    async def main() -> Any:
        own = orchestrator(endpoint, nats_url)
        try:
            return await act(own)
        finally:
            await own.events.close()
            await own.gateway.close()

    return asyncio.run(main())


def complete_in_thread(endpoint: AsyncEndpoint, nats_url: str, message: CallCompleted) -> Any:
    """A completion handled by an orchestrator of its own, on a thread (a second process)."""
    return using_orchestrator(endpoint, nats_url, lambda o: o.handle_completion(message))


def start(endpoint: AsyncEndpoint, nats_url: str, programme: str) -> str:
    request = StartRun(raw_key="raw/fanin/fanin_mxt_l0.fits", programme=programme)
    return using_orchestrator(endpoint, nats_url, lambda o: o.start_run(request))["run_id"]


def test_two_completions_at_once_dispatch_the_fan_in_brick_once(orchestration: Any) -> None:
    endpoint, nats_url = orchestration
    for _round in range(3):
        endpoint.calls.clear()
        run_id = start(endpoint, nats_url, "GP")
        for brick in ("ingest", "calibrate", "coordinates", "screen", "detect"):
            complete_in_thread(endpoint, nats_url, completion(run_id, brick))
        threads = [
            threading.Thread(
                target=complete_in_thread, args=(endpoint, nats_url, completion(run_id, b))
            )
            for b in ("exposure", "lightcurve", "spectrum")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        dispatched = Counter(name for name, _ in endpoint.calls)
        assert dispatched["brick-quicklook"] == 1, endpoint.calls
        assert all(count == 1 for count in dispatched.values()), "; ".join(
            c for _, c in endpoint.calls
        )


def test_a_redelivered_completion_changes_nothing(orchestration: Any) -> None:
    endpoint, nats_url = orchestration
    run_id = start(endpoint, nats_url, "ToO")
    first = complete_in_thread(endpoint, nats_url, completion(run_id, "ingest"))
    again = complete_in_thread(endpoint, nats_url, completion(run_id, "ingest"))
    assert first == again == "succeeded"
    # the repeat re-sends calibrate with the same call id (healing a lost dispatch):
    # the gateway's queue keeps one
    assert [call_id for name, call_id in endpoint.calls if name == "brick-calibrate"] == [
        f"{run_id}_calibrate_1"
    ] * 2
    stale = complete_in_thread(endpoint, nats_url, completion(run_id, "calibrate", attempt=7))
    assert stale == "succeeded"
    from gateway.orchestrator.views import run_view

    tasks = {t["brick"]: t for t in run_view(run_id)["tasks"]}
    assert tasks["calibrate"]["state"] == "dispatched", "a stale attempt finished the task"


def test_programmes_are_seeded_once_per_process(
    orchestration: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run starts after the first read configdb only; a database emptied since is re-seeded."""
    import sqlalchemy as sa

    from gateway.orchestrator import state
    from storage import configdb

    seeded: list[str] = []
    real_seed = configdb.seed

    def counting_seed(session: Any, specs: Any) -> Any:
        records = real_seed(session, specs)
        seeded.extend(record.programme for record in records)
        return records

    monkeypatch.setattr(configdb, "seed", counting_seed)
    endpoint, nats_url = orchestration
    first, second = start(endpoint, nats_url, "ToO"), start(endpoint, nats_url, "GP")
    assert first != second
    assert sorted(seeded) == ["CP", "GP", "ToO"]
    with state.engine().begin() as connection:
        for table in ("config_activations", "active_configs"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    start(endpoint, nats_url, "CP")
    assert sorted(seeded) == ["CP", "CP", "GP", "GP", "ToO", "ToO"]


def test_builtin_programmes_resolve_against_the_bricks() -> None:
    dags = {s.programme: build_dag(s) for s in load_yaml_specs(builtin_programme_files())}
    assert set(dags) == {"ToO", "CP", "GP"}
    too = dags["ToO"].order
    assert too.index("notice") < min(too.index(b) for b in ("exposure", "lightcurve", "spectrum"))
    assert "notice" not in dags["GP"].nodes and "notice" in dags["CP"].nodes
    assert dags["ToO"].nodes["quicklook"].inputs["lightcurve"] == "lightcurve"


def test_a_programme_missing_an_edge_is_rejected_naming_it() -> None:
    spec = ConfigSpec(
        programme="GP",
        dag=[
            {"brick": "ingest"},
            {"brick": "calibrate"},
            {"brick": "coordinates", "needs": ["calibrate"]},
            {"brick": "screen", "needs": ["coordinates"]},
            {"brick": "detect", "needs": ["screen"]},
            {"brick": "lightcurve", "needs": ["screen"]},
        ],
    )
    with pytest.raises(BadInput, match="'lightcurve' reads 'position' from 'detect'"):
        build_dag(spec)
    bad_param = spec.model_copy(
        update={
            "dag": [
                *spec.dag[:5],
                spec.dag[5].model_copy(update={"needs": ["detect"], "params": {"bin_seconds": 3}}),
            ]
        }
    )
    with pytest.raises(BadInput, match="bin_seconds"):
        build_dag(bad_param)


def test_a_completion_naming_another_runs_products_fails_the_task(orchestration: Any) -> None:
    """A forged (or buggy) success registering what its run did not make is refused:
    no product of the other run is taken, no alert published, the task fails with why."""
    from gateway.orchestrator.views import list_products, run_view

    endpoint, nats_url = orchestration
    victim = start(endpoint, nats_url, "ToO")
    run_id = start(endpoint, nats_url, "ToO")
    forged = completion(victim, "ingest")  # outputs under products/<victim>/...
    forged.call_id = f"{run_id}_ingest_1"
    assert complete_in_thread(endpoint, nats_url, forged) == "failed"
    view = run_view(run_id)
    tasks = {t["brick"]: t for t in view["tasks"]}
    assert view["state"] == "failed" and tasks["ingest"]["state"] == "failed"
    assert f"products/{victim}/" in tasks["ingest"]["error"]
    assert list_products(run_id) == [] and tasks["ingest"]["products"] == []
