"""The embedded stack's life cycle: ``mxt up`` / ``mxt down`` and Ctrl-C leave no process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import psutil

from gateway.lanes import LANES, lane_durable
from gateway.messages import ASYNC_STREAM, WORKER_DURABLE
from local.natsd import free_port
from local.stack import EmbeddedStack, read_state
from tests.gateway.conftest import FUNCTIONS, function_entry, wait_call, wait_for, write_stack


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_mxt_up_then_down_leaves_no_orphans(tmp_path: Path) -> None:
    stack_file = write_stack(
        tmp_path / "stack.yml", {"echo": function_entry("echo"), "sleep": function_entry("sleep")}
    )
    data_dir, port = tmp_path / "data", free_port()
    mxt = [sys.executable, "-c", "from local.cli import main; main()"]
    env = dict(os.environ)
    env.pop("MXT_SECRETS_DIR", None)
    up = subprocess.Popen(
        [*mxt, "up", "--port", str(port), "--data-dir", str(data_dir), "--stack", str(stack_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: read_state(data_dir) is not None and _healthy(url), timeout=60)
        password = (data_dir / "secrets" / "basic-auth-password").read_text().strip()
        wait_for(lambda: _ready(url, password, 2), timeout=60)
        children = _descendants(up.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "nats-server" in names and names.count("gateway.runtime") == 2
        listed = subprocess.run(
            [*mxt, "ls", "--data-dir", str(data_dir)], capture_output=True, text=True, env=env
        )
        assert listed.returncode == 0 and "echo" in listed.stdout and "sleep" in listed.stdout
        down = subprocess.run(
            [*mxt, "down", "--data-dir", str(data_dir)], capture_output=True, text=True, env=env
        )
        assert down.returncode == 0, down.stderr
        assert up.wait(30) == 0
        assert _alive(children) == []
        assert read_state(data_dir) is None
        assert "password created in" in up.stdout.read().decode()
    finally:
        if up.poll() is None:
            up.kill()


def test_ctrl_c_drains_and_stops_everything(tmp_path: Path) -> None:
    stack_file = write_stack(tmp_path / "stack.yml", {"sleep": function_entry("sleep")})
    stack = EmbeddedStack(stack_file, tmp_path / "data").start()
    try:
        assert stack.process is not None
        children = _descendants(stack.process.pid)
        # a call in flight when Ctrl-C arrives still gets its answer
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            import threading

            answers: list[int] = []
            caller = threading.Thread(
                target=lambda: answers.append(
                    http.post("/function/sleep", json={"seconds": 1}).status_code
                )
            )
            caller.start()
            wait_for(lambda: _invocations(stack) == 1)
            stack.process.send_signal(signal.SIGINT)
            caller.join(30)
        assert answers == [200]
        assert stack.process.wait(30) == 0
        assert _alive(children) == []
    finally:
        stack.stop()


def _invocations(stack: EmbeddedStack) -> int:
    return sum(f["invocationCount"] for f in stack.functions())


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ready(url: str, password: str, count: int) -> bool:
    functions = httpx.get(url + "/system/functions", auth=("admin", password)).json()
    return sum(f["availableReplicas"] for f in functions) == count


def test_standalone_worker_runs_the_queue(tmp_path: Path) -> None:
    stack_file = write_stack(tmp_path / "stack.yml", {"echo": function_entry("echo")})
    data_dir = tmp_path / "data"
    with EmbeddedStack(stack_file, data_dir, env={"MXT_RUN_WORKER": "false"}) as stack:
        http = httpx.Client(base_url=stack.url, timeout=30)
        call_id = http.post("/async-function/echo", json={"message": "q"}).headers["x-call-id"]
        assert http.get(f"/async-function/status/{call_id}").json()["state"] == "queued"
        env = dict(os.environ, MXT_SECRETS_DIR=str(data_dir / "secrets"))
        worker = subprocess.Popen(
            [sys.executable, "-c", "from local.cli import main; main()", "worker",
             "--data-dir", str(data_dir)],
            env=env,
        )  # fmt: skip
        try:
            done = wait_call(http, call_id, ("succeeded",))
            assert done["status_code"] == 200
            # it went through the gateway, which counted the invocation
            assert stack.functions()[0]["invocationCount"] == 1
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0


def test_nats_restart_keeps_the_async_path_working(nats_fresh, tmp_path: Path) -> None:
    functions = {"echo": function_entry("echo"), "sleep": function_entry("sleep")}
    stack_file = write_stack(tmp_path / "stack.yml", functions)
    with EmbeddedStack(stack_file, tmp_path / "data", nats_url=nats_fresh.url) as stack:
        http = httpx.Client(base_url=stack.url, timeout=30)
        before = http.post("/async-function/echo", json={"message": "1"}).headers["x-call-id"]
        wait_call(http, before, ("succeeded",))
        running = http.post("/async-function/sleep", json={"seconds": 3}).headers["x-call-id"]
        wait_call(http, running, ("running",))
        # NATS away while the sleep call ends, for longer than a JetStream request may
        # wait (5 s): its outcome waits for NATS to come back instead of being lost
        nats_fresh.stop()
        time.sleep(8)
        nats_fresh.start()

        def accepted() -> str | None:
            resp = http.post("/async-function/echo", json={"message": "2"})
            assert resp.status_code in (202, 503), resp.text  # 503 only while reconnecting
            return resp.headers["x-call-id"] if resp.status_code == 202 else None

        after = wait_for(accepted)
        assert wait_call(http, after, ("succeeded",))["status_code"] == 200
        # the status bucket and streams survived on the server's store
        assert http.get(f"/async-function/status/{before}").json()["state"] == "succeeded"
        # the call in flight across the outage was recorded and acknowledged, so it
        # will not run again (an unacknowledged one would be redelivered after 30 s)
        across = wait_call(http, running, ("succeeded",))
        assert across["attempts"] == 1
        wait_for(lambda: asyncio.run(_unacknowledged(nats_fresh.url)) == 0, timeout=15)


async def _unacknowledged(nats_url: str) -> int:
    """Async calls of every lane (and of the pre-lane consumer) not acknowledged yet."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        left = 0
        for durable in (WORKER_DURABLE, *(lane_durable(lane) for lane in LANES)):
            info = await js.consumer_info(ASYNC_STREAM, durable)
            left += info.num_ack_pending + info.num_pending
        return left
    finally:
        await nc.close()


def test_killed_stack_leaves_nothing_and_restarts_with_its_deployments(tmp_path: Path) -> None:
    stack_file = write_stack(tmp_path / "stack.yml", {"echo": function_entry("echo")})
    stack = EmbeddedStack(stack_file, tmp_path / "data").start()
    assert stack.process is not None
    deployment = {
        "service": "api-echo",
        "handler": str(FUNCTIONS / "echo"),
        "annotations": {"com.mxt.access": "public"},
    }
    deployed = httpx.post(f"{stack.url}/system/functions", json=deployment, auth=stack.auth)
    assert deployed.status_code == 202
    children = _descendants(stack.process.pid)
    names = " ".join(" ".join(p.cmdline()) for p in children)
    assert "nats-server" in names and "gateway.runtime" in names
    stack.process.kill()  # SIGKILL: no drain, no cleanup
    stack.process.wait()
    # function processes and the private nats-server die with their parent
    wait_for(lambda: _alive(children) == [])
    # the next start on the same data directory brings back the API-deployed function
    with EmbeddedStack(stack_file, tmp_path / "data") as again:
        resp = httpx.post(f"{again.url}/function/api-echo", json={"message": "back"})
        assert resp.status_code == 200 and resp.json()["message"] == "back"


def test_stack_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A test or benchmark killed mid-way leaves no stack behind (parent-death signal)."""
    stack_file = write_stack(tmp_path / "stack.yml", {"echo": function_entry("echo")})
    owner_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from local.stack import EmbeddedStack\n"
        "s = EmbeddedStack(Path(sys.argv[1]), Path(sys.argv[2])).start(timeout=120)\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code, str(stack_file), str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        stack_pid = int(owner.stdout.readline())
        stack_tree = [psutil.Process(stack_pid), *_descendants(stack_pid)]
        names = " ".join(" ".join(p.cmdline()) for p in stack_tree)
        assert "nats-server" in names and "gateway.runtime" in names
        owner.kill()
        owner.wait()
        wait_for(lambda: _alive(stack_tree) == [], timeout=60)
    finally:
        owner.kill()
