"""The process contract: ``python -m gateway.runtime`` served over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth import (
    PLATFORM_TOKEN_FILE,
    ensure_secret,
    platform_headers,
    read_platform_token,
)
from local.natsd import free_port
from tests.runtime.conftest import FUNCTIONS, REPOSITORY


def _wait_healthy(url: str, process: subprocess.Popen, deadline_seconds: float = 30) -> None:
    """Poll the health route until it answers; fail if the process exits first."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"runtime exited with status {process.returncode} before being healthy")
        try:
            if httpx.get(f"{url}/_/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("runtime not healthy")


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a replica: a secrets directory holding the platform's token."""
    secrets_dir = tmp_path_factory.mktemp("secrets")
    ensure_secret(secrets_dir, PLATFORM_TOKEN_FILE)
    return {**os.environ, "MXT_SECRETS_DIR": str(secrets_dir)}


@pytest.fixture()
def echo_process(tmp_path: Path, platform_env) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """The echo function served by its own process on a free port, 4 KiB body limit."""
    port = free_port()
    log_file = tmp_path / "echo.log"
    environment = {**platform_env, "MXT_MAX_BODY_BYTES": "4096"}
    with open(log_file, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.runtime", "--handler", str(FUNCTIONS / "echo")]
            + ["--name", "echo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPOSITORY,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url, process, log_file
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_echo_process_serves_limits_logs_and_stops_cleanly(echo_process, platform_env):
    url, process, log_file = echo_process
    platform = platform_headers(read_platform_token(Path(platform_env["MXT_SECRETS_DIR"])))
    health = httpx.get(f"{url}/_/health").json()
    echoed = httpx.post(
        f"{url}/sub",
        json={"message": "over the wire"},
        headers={"X-Call-Id": "proc-1", "X-Mxt-Run-Id": "run-9", "X-Mxt-Task-Id": "task-3"}
        | platform,
    )
    # a replica takes calls from the platform only: without (or with a wrong) token, 403
    outsider = httpx.post(f"{url}/sub", json={"message": "from outside"})
    forged = httpx.post(url, json={"message": "x"}, headers={"X-Mxt-Platform-Token": "guess"})

    def chunked_body() -> Iterator[bytes]:
        for _ in range(8):
            yield b"z" * 1024

    chunked = httpx.post(url, content=chunked_body(), headers=platform)
    declared = httpx.post(url, content=b"z" * 5000, headers=platform)

    process.send_signal(signal.SIGTERM)
    # uvicorn drains, then re-raises the signal so the parent sees "terminated by SIGTERM"
    assert process.wait(30) == -signal.SIGTERM

    assert health == {"status": "ok", "function": "echo", "pid": process.pid}
    assert echoed.status_code == 200
    assert echoed.json() == {"message": "over the wire", "data": None, "path": "/sub"}
    assert echoed.headers["x-call-id"] == "proc-1"
    assert outsider.status_code == forged.status_code == 403
    assert "platform" in outsider.json()["reason"]
    assert chunked.status_code == 413
    assert chunked.json()["reason"].startswith("request body exceeds the limit of 4096 bytes")
    assert declared.status_code == 413
    assert "5000 bytes" in declared.json()["reason"]

    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all(line["function"] == "echo" and line["time"].endswith("Z") for line in lines)
    assert any(line["message"].startswith("Finished server process") for line in lines)
    call = [line for line in lines if line.get("call_id") == "proc-1"]
    assert len(call) == 1
    assert call[0]["run_id"] == "run-9" and call[0]["task_id"] == "task-3"
    assert call[0]["status"] == 200 and call[0]["path"] == "/sub"


def test_unloadable_handler_exits_non_zero_with_the_reason(tmp_path, platform_env):
    (tmp_path / "handler.py").write_text("import definitely_not_installed\n")
    finished = subprocess.run(
        [sys.executable, "-m", "gateway.runtime", "--handler", str(tmp_path), "--name", "broken"]
        + ["--port", str(free_port())],
        cwd=REPOSITORY,
        env=platform_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "cannot serve function 'broken'" in finished.stderr
    assert "No module named 'definitely_not_installed'" in finished.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MXT_LOG_LEVEL", "chatty", "MXT_LOG_LEVEL='chatty' is not a logging level"),
        ("MXT_MAX_BODY_BYTES", "lots", "MXT_MAX_BODY_BYTES='lots' is not an integer"),
        ("MXT_CALL_TIMEOUT_SECONDS", "0", "MXT_CALL_TIMEOUT_SECONDS='0' must be positive"),
    ],
)
def test_invalid_setting_exits_non_zero_with_the_variable_named(
    variable, value, message, platform_env
):
    finished = subprocess.run(
        [sys.executable, "-m", "gateway.runtime", "--handler", str(FUNCTIONS / "echo")]
        + ["--name", "echo", "--port", str(free_port())],
        cwd=REPOSITORY,
        env={**platform_env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert message in finished.stderr


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_platform_token_refuses_to_start(tmp_path, content):
    """A replica without its secret must not start open to anyone."""
    if content is not None:
        (tmp_path / PLATFORM_TOKEN_FILE).write_text(content)
    finished = subprocess.run(
        [sys.executable, "-m", "gateway.runtime", "--handler", str(FUNCTIONS / "echo")]
        + ["--name", "echo", "--port", str(free_port())],
        cwd=REPOSITORY,
        env={**os.environ, "MXT_SECRETS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert ("is empty" if content is not None else "is missing") in finished.stderr
