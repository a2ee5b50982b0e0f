"""A supervised bus (issue 11): the stack's nats-server is reaped and restarted when it
dies or stops answering, ``/healthz`` names it while it is down, submissions get 503
meanwhile (never a "created" run that failed), and work in flight resumes after.

The outage window is made deterministic by the supervisor's hold file
(``local.natsd.HOLD_FILE``): while it exists a dead server stays down, so the tests
look at the stack with the bus down for as long as they need, then let it restart.
Every wait is bounded; no assertion is on a duration.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from local.chainkit import prepare_data_dir, stack_subset
from local.natsd import HOLD_FILE, NatsServer, NatsSupervisor, answers
from local.stack import EmbeddedStack
from tests.chains.conftest import (  # noqa: F401 - observation_factory is a fixture
    RunsClient,
    assert_products_once,
    local_store,
    observation_factory,
)
from tests.gateway.conftest import function_entry
from tests.gateway.conftest import wait_for as wait_until

#: bounded waits, in seconds (generous: the suite runs on small shared machines)
WAIT = 60.0


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    """The first truthy value of ``predicate()``; fails the test after ``timeout`` s."""
    return wait_until(predicate, timeout, what=what)


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended and been reaped (a zombie has not)."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False  # running, or a zombie nobody reaped


def nats_process(stack: EmbeddedStack) -> psutil.Process | None:
    """The stack's running nats-server (a child of the stack process), if any."""
    assert stack.process is not None
    for child in psutil.Process(stack.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if "nats-server" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                return child
    return None


def zombies(stack: EmbeddedStack) -> list[int]:
    """Children of the stack process that ended without being reaped."""
    assert stack.process is not None
    found = []
    for child in psutil.Process(stack.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


def listening_port(proc: psutil.Process) -> int:
    ports = [c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert len(ports) == 1, ports
    return ports[0]


@contextlib.contextmanager
def bus_down(stack: EmbeddedStack) -> Iterator[int]:
    """SIGKILL the stack's nats-server and keep it down (hold file) inside the block; let
    it restart after. Yields the killed server's pid; checks it was reaped, not left a
    zombie, and that the server came back on the same port."""
    server = nats_process(stack)
    assert server is not None
    port = listening_port(server)
    hold = stack.data_dir / "nats" / HOLD_FILE
    hold.touch()
    try:
        server.send_signal(signal.SIGKILL)
        wait_for(lambda: gone(server.pid), what=f"nats-server {server.pid} reaped")
        assert zombies(stack) == []
        yield server.pid
    finally:
        hold.unlink(missing_ok=True)
    restarted = wait_for(lambda: nats_process(stack), what="a new nats-server")
    assert restarted.pid != server.pid
    wait_for(lambda: answers("127.0.0.1", port), what="the new server on the same port")
    assert listening_port(restarted) == port


def health(stack: EmbeddedStack) -> tuple[int, dict[str, Any]]:
    return stack.health()


# ------------------------------------------------------------------ the supervisor alone


@pytest.fixture()
def supervised(tmp_path: Path) -> Iterator[tuple[NatsServer, NatsSupervisor, list[str]]]:
    lines: list[str] = []
    server = NatsServer(tmp_path / "nats", password="s3cret-bus").start()
    supervisor = NatsSupervisor(
        server, log=lines.append, restart_delay=0.1, probe_period=0.2, probe_timeout=0.5
    )
    supervisor.start()
    yield server, supervisor, lines
    supervisor.stop()


def test_a_killed_server_is_reaped_and_restarted_on_its_port(supervised: Any) -> None:
    server, supervisor, lines = supervised
    first = server.process
    assert first is not None
    first.send_signal(signal.SIGKILL)
    wait_for(lambda: supervisor.restarts == 1)
    assert gone(first.pid)  # reaped by the supervisor: no zombie
    assert server.process is not first and answers(server.host, server.port)
    assert server.config_path.stat().st_mode & 0o777 == 0o600  # same credentials file
    assert [line.split(" (pid")[0] for line in lines] == ["nats-server", "nats-server restarted"]
    assert "killed by SIGKILL" in lines[0]


def test_a_server_that_stops_answering_is_killed_and_restarted(supervised: Any) -> None:
    server, supervisor, lines = supervised
    first = server.process
    assert first is not None
    first.send_signal(signal.SIGSTOP)  # still accepts TCP connections, greets no one
    wait_for(lambda: server.process is not first and server.process is not None)
    assert gone(first.pid)
    wait_for(lambda: answers(server.host, server.port))
    assert any("does not answer" in line for line in lines), lines


def test_the_hold_file_keeps_a_dead_server_down(supervised: Any) -> None:
    server, supervisor, lines = supervised
    hold = server.store_dir / HOLD_FILE
    hold.touch()
    first = server.process
    assert first is not None
    first.kill()
    wait_for(lambda: any("held" in line for line in lines))
    assert server.process is first and not answers(server.host, server.port)
    hold.unlink()
    wait_for(lambda: supervisor.restarts == 1)
    assert answers(server.host, server.port)


def test_stop_stops_the_server_and_does_not_restart_it(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    supervisor = NatsSupervisor(server, log=lambda line: None, restart_delay=0.1).start()
    process = server.process
    assert process is not None
    supervisor.stop()
    assert process.poll() is not None and server.process is None
    assert supervisor.restarts == 0


# ------------------------------------------------------------------ a whole stack


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunsClient]:
    """A chain stack (orchestrator, bricks) plus echo, restarting its bus quickly."""
    root = tmp_path_factory.mktemp("bus")
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml", extra={"echo": function_entry("echo")})
    env = {"MXT_DATA_DIR": str(data_dir), "MXT_NATS_RESTART_DELAY": "0.2"}
    stack = EmbeddedStack(stack_file, data_dir, env=env).start(timeout=90)
    yield RunsClient(stack)
    stack.stop()


def test_healthz_reports_each_dependency(chain: RunsClient) -> None:
    stack = chain.stack
    assert httpx.get(stack.url + "/healthz").text == "OK"  # plain as OpenFaaS's by default
    status, report = health(stack)
    assert status == 200 and report["status"] == "ok" and report["down"] == []
    checks = report["checks"]
    assert {name: checks[name]["status"] for name in ("nats", "database", "objects")} == {
        "nats": "ok",
        "database": "ok",
        "objects": "ok",
    }
    functions = checks["functions"]
    assert functions["eager"] == functions["ready"] > 0 and functions["waiting"] == []


def test_nats_killed_mid_run_restarts_and_the_run_completes(
    chain: RunsClient,
    observation_factory: Any,  # noqa: F811
) -> None:
    stack = chain.stack
    l0, _ = observation_factory(seed=41)
    run_id = chain.started(chain.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"]
    wait_for(
        lambda: any(t["state"] in ("dispatched", "running") for t in chain.run(run_id)["tasks"]),
        what="a task of the run dispatched",
    )
    refused = observation_factory(seed=42)[0]
    refused_obs = refused[0].header["OBS_ID"]
    other = chain.upload_raw(refused, refused_obs)
    with bus_down(stack):
        # its completions travel on the bus: the run cannot end while it is down
        assert chain.run(run_id)["state"] == "running"
        status, report = wait_for(
            lambda: (answer := health(stack))[0] == 503 and answer, what="/healthz 503"
        )
        assert report["status"] == "down" and report["down"] == ["nats"]
        assert report["checks"]["nats"]["status"] == "down"
        assert report["checks"]["database"]["status"] == "ok"
        assert not stack.healthy()
        # a new run while the bus is down: refused with a reason, nothing created
        answer = chain.start(other)
        assert answer.status_code == 503, answer.text
        assert answer.json()["kind"] == "transient" and "NATS" in answer.json()["reason"]
        assert int(answer.headers["retry-after"]) > 0
        # an async call too, at once, and nothing of it is left to replay later
        echo = httpx.post(
            stack.url + "/async-function/echo",
            json={"message": "during the outage"},
            headers={"X-Call-Id": "during-outage"},
            timeout=WAIT,
        )
        assert echo.status_code == 503, echo.text
        assert "NATS" in echo.json()["reason"] and int(echo.headers["retry-after"]) > 0
        # reads that need no bus still answer
        assert chain.http.get(f"{chain.url}/mxt/runs/{run_id}").status_code == 200
    wait_for(stack.healthy, what="/healthz 200 after the restart")
    assert health(stack)[1]["checks"]["nats"]["status"] == "ok"
    run = chain.wait(run_id, timeout=180)
    assert run["state"] == "succeeded", run["reason"]
    assert len(assert_products_once(chain, run_id)) == 20
    listed = chain.http.get(f"{chain.url}/mxt/runs", params={"obs_id": refused_obs}).json()
    assert listed["items"] == [], "the refused submission created a run"
    # the bus takes work again: the refused run and the refused call, as first tries
    again = chain.started(other)
    assert chain.wait(again["run_id"], timeout=180)["state"] == "succeeded"
    echo = httpx.post(
        stack.url + "/async-function/echo",
        json={"message": "after the outage"},
        headers={"X-Call-Id": "during-outage"},
        timeout=WAIT,
    )
    assert echo.status_code == 202 and "x-duplicate" not in echo.headers, echo.headers
    call_id = echo.headers["x-call-id"]

    def ended() -> dict[str, Any] | None:
        status = httpx.get(f"{stack.url}/async-function/status/{call_id}").json()
        return status if status["state"] in ("succeeded", "failed", "dead-lettered") else None

    status = wait_for(ended, what="the async call after the restart")
    assert status["state"] == "succeeded" and status["attempts"] == 1, status


def test_after_the_restart_a_raw_arrival_starts_a_run(
    chain: RunsClient,
    observation_factory: Any,  # noqa: F811
) -> None:
    """The connector's durable consumer of storage events survived the restart."""
    import asyncio

    from storage.events import publish_object_created

    l0, _ = observation_factory(seed=43)
    obs_id = l0[0].header["OBS_ID"]
    chain.upload_raw(l0, obs_id)
    info = local_store(chain.stack.data_dir).head("raw", f"{obs_id}/{obs_id}_mxt_l0.fits")
    asyncio.run(publish_object_created(chain.stack.nats_url, info))

    def listed() -> list[dict[str, Any]]:
        page = chain.http.get(f"{chain.url}/mxt/runs", params={"obs_id": obs_id}).json()
        return page["items"]

    (run,) = wait_for(listed, what="a run for the arrival")
    assert chain.wait(run["run_id"], timeout=180)["state"] == "succeeded"


def test_the_stack_log_has_one_line_per_event(chain: RunsClient) -> None:
    text = chain.stack.log_path.read_text()
    events = [line for line in text.splitlines() if line.startswith("mxt: nats-server")]
    assert events, text[-2000:]
    assert any("killed by SIGKILL; restarting" in line for line in events)
    assert any(line.startswith("mxt: nats-server restarted (pid") for line in events)
    assert "Traceback" not in text, text[-3000:]
    # the gateway's clients: each error once (not once per connection and half second)
    errors = [line for line in text.splitlines() if line.startswith("NATS: ")]
    assert "NATS: reconnected" in errors
    repeated = [e for e in errors if "connected" not in e]
    assert len(repeated) == len(set(repeated)), repeated


def test_the_stack_stops_cleanly_after_a_restart(chain: RunsClient) -> None:
    stack = chain.stack
    server = nats_process(stack)
    assert server is not None
    assert stack.stop() == 0
    wait_for(lambda: gone(server.pid), what="the restarted server stopped with the stack")
    assert stack.stop() is None  # the fixture's stop() is a no-op now


# ------------------------------------------------------------------ /healthz's checks alone


class _Provider:
    deployments: dict[str, Any] = {}


class _Platform:
    """What :class:`gateway.platform.Health` reads of a platform: no NATS connection."""

    nc = None
    js = None
    provider = _Provider()


@pytest.fixture()
def checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from gateway.platform import Health

    for name in ("MXT_DATABASE_URL", "MXT_OBJECT_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path))
    return Health(_Platform())  # type: ignore[arg-type]


def test_healthz_names_what_is_down(checks: Any, tmp_path: Path) -> None:
    import asyncio

    (tmp_path / "mxt.db").write_bytes(b"not a database, " * 100)
    (tmp_path / "objects").write_text("a file where the store's directory should be")
    report = asyncio.run(checks.report())
    assert report["status"] == "down" and report["down"] == ["nats", "database", "objects"]
    assert report["checks"]["nats"]["reason"] == "not connected yet"
    assert "not a database" in report["checks"]["database"]["reason"]
    assert "not a writable directory" in report["checks"]["objects"]["reason"]
    assert report["checks"]["functions"] == {
        "status": "ok", "eager": 0, "ready": 0, "lazy": 0, "waiting": []
    }  # fmt: skip


def test_healthz_reuses_a_fresh_report(checks: Any) -> None:
    import asyncio

    async def twice() -> tuple[Any, Any]:
        return await checks.report(), await checks.report()

    first, second = asyncio.run(twice())
    assert first is second
    # a database not created yet is fine: the first function to use it makes it
    assert first["checks"]["database"] == {
        "status": "ok", "backend": "sqlite", "note": "not created yet"
    }  # fmt: skip
    assert first["checks"]["objects"]["status"] == "ok"


def test_the_same_nats_error_is_logged_once_then_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from gateway import natsconn

    monkeypatch.setattr(natsconn, "_reported", {})
    clock = [1000.0]
    monkeypatch.setattr(natsconn, "_clock", lambda: clock[0])
    refused = ConnectionRefusedError(111, "Connection refused")
    with caplog.at_level("WARNING", logger="mxt.nats"):
        for _ in range(40):  # 20 s of retries every half second
            asyncio.run(natsconn.report_nats_error(refused))
            clock[0] += 0.5
        clock[0] += natsconn.REPORT_EVERY
        asyncio.run(natsconn.report_nats_error(refused))
    assert [r.getMessage() for r in caplog.records] == [
        "NATS: ConnectionRefusedError: [Errno 111] Connection refused",
        "NATS: ConnectionRefusedError: [Errno 111] Connection refused (and 39 times since)",
    ]
