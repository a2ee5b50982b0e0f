"""Fixtures of the frontend tests: the hub served by a real uvicorn process, events on NATS."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.natsd import NatsServer, free_port, wait_for_port


@contextlib.contextmanager
def serve_factory(factory: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run ``uvicorn --factory <factory>`` on a free port; yield its base URL."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory]
            + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", port, 20)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def hub_address(nats_fresh: NatsServer, tmp_path: Path) -> Iterator[str]:
    """``host:port`` of a hub process reading the test's own nats-server.

    The per-client queue is small (64 events) so that the slow-client test needs few events.
    """
    env = {"MXT_NATS_URL": nats_fresh.url, "MXT_WEBSOCKET_QUEUE": "64"}
    with serve_factory("gateway.hub:create_app", env, tmp_path / "hub.log") as address:
        yield address
