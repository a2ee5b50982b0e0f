"""A timed-out handler cannot keep burning CPU: its replica process stops itself.

Real ``python -m gateway.runtime`` processes: a synchronous handler that spins for ever
gets its call a 504 at the timeout (1 s); when its thread still runs after the grace
(``MXT_ABANDON_GRACE_SECONDS``), the process logs one line and ends by SIGTERM (the
provider restarts it). A handler that finishes within the grace leaves it serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth import PLATFORM_TOKEN_FILE, ensure_secret, platform_headers, read_platform_token
from local.natsd import free_port
from tests.runtime.conftest import REPOSITORY

HANDLER = """
import time


def handle(request: bytes) -> bytes:
    if request == b"spin":
        while True:  # pure Python: holds a core until the process ends
            pass
    time.sleep(float(request or b"0"))
    return b"done"
"""


class Replica:
    """One runtime process serving the test handler, its stderr in a file."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path, headers: dict) -> None:
        self.process, self.url, self.log, self.headers = process, url, log, headers

    def post(self, body: bytes, call_id: str) -> httpx.Response:
        return httpx.post(
            self.url, content=body, headers={"X-Call-Id": call_id} | self.headers, timeout=60
        )

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition``; fail naming ``what`` after ``seconds`` (a hang guard)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)


@pytest.fixture()
def start_replica(tmp_path: Path) -> Iterator[Callable[[float], Replica]]:
    """``start_replica(grace)``: the handler served with a 1 s call timeout."""
    secrets = tmp_path / "secrets"
    ensure_secret(secrets, PLATFORM_TOKEN_FILE)
    headers = platform_headers(read_platform_token(secrets))
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text(textwrap.dedent(HANDLER))
    processes: list[subprocess.Popen] = []

    def start(grace: float) -> Replica:
        port = free_port()
        log = tmp_path / f"replica-{port}.log"
        environment = {
            **os.environ,
            "MXT_SECRETS_DIR": str(secrets),
            "MXT_CALL_TIMEOUT_SECONDS": "1",
            "MXT_ABANDON_GRACE_SECONDS": str(grace),
        }
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.runtime", "--handler", str(tmp_path / "fn")]
                + ["--name", "spinner", "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPOSITORY,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, f"exited early: {log.read_text()}"
            try:
                return httpx.get(f"{url}/_/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_until(healthy, 30, "the replica answers its health check")
        return Replica(process, url, log, headers)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_a_spinning_handler_gets_504_then_its_process_exits(start_replica) -> None:
    replica = start_replica(1.0)
    response = replica.post(b"spin", "spin-1")
    answered = time.monotonic()
    # the whole 504 arrived before the process went away
    assert response.status_code == 504
    assert response.json() == {
        "kind": "transient",
        "reason": "timed out after 1 s",
        "call_id": "spin-1",
    }

    # ends by its own SIGTERM after the 1 s grace; the hang guard is far above it
    assert replica.process.wait(60) == -signal.SIGTERM
    exited_after = time.monotonic() - answered

    stopping = [line for line in replica.lines() if line.get("level") == "error"]
    assert len(stopping) == 1, stopping
    line = stopping[0]
    assert line["function"] == "spinner" and line["call_id"] == "spin-1"
    assert line["seconds"] >= 2.0  # the 1 s timeout and the 1 s grace
    assert "still running" in line["message"]
    assert "stopping the process so that it is restarted" in line["message"]
    print(f"process exited {exited_after:.2f} s after its 504")


def test_a_handler_finishing_within_the_grace_leaves_the_process_serving(start_replica) -> None:
    replica = start_replica(5.0)
    late = replica.post(b"1.5", "late-1")  # 0.5 s past its timeout, well within the grace
    assert late.status_code == 504

    def finished() -> bool:
        return any(
            line.get("call_id") == "late-1" and "finished" in line.get("message", "")
            for line in replica.lines()
        )

    _wait_until(finished, 30, "the late handler's thread is seen finished")
    assert replica.process.poll() is None
    assert replica.post(b"0", "after-1").content == b"done"
    assert not [line for line in replica.lines() if line.get("level") == "error"]
