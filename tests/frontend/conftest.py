"""Fixtures of the frontend tests: the hub served by a real uvicorn process, events on NATS."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.natsd import NatsServer, free_port
from local.testservers import served_process


@contextlib.contextmanager
def serve_factory(factory: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """Run ``uvicorn --factory <factory>`` on a free port; yield its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", factory]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with served_process(argv, port, env=env, log=log, ready_seconds=20):
        yield f"127.0.0.1:{port}"


HUB_ENV = {"MXT_WEBSOCKET_QUEUE": "64"}  # small, so the slow-client test needs few events


@pytest.fixture(scope="module")
def hub_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server for one test module's hub (tests tell their events apart by run id)."""
    server = NatsServer(tmp_path_factory.mktemp("hub-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub_address(hub_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a hub process (uvicorn) reading ``hub_nats``."""
    env = {"MXT_NATS_URL": hub_nats.url, **HUB_ENV}
    log = tmp_path_factory.mktemp("hub") / "hub.log"
    with serve_factory("gateway.hub:create_app", env, log) as address:
        yield address


@pytest.fixture()
def bare_hub_address(nats_fresh: NatsServer, tmp_path: Path) -> Iterator[str]:
    """A hub whose nats-server has no events stream at all."""
    env = {"MXT_NATS_URL": nats_fresh.url, **HUB_ENV}
    with serve_factory("gateway.hub:create_app", env, tmp_path / "hub.log") as address:
        yield address


# The functions the dashboard and the proxy table reach: runs, programmes, the three
# databases, raw uploads and downloads, the bricks, and echo for plain invocations.
FRONTEND_FUNCTIONS = (
    "orchestrator",
    "brick-",
    "configdb-",
    "missiondb-",
    "caldb-",
    "objects-",
    "echo",
)


@pytest.fixture(scope="session")
def frontend_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded stack with the model CALDB ingested, for the nginx and browser tests."""
    from local.chainkit import prepare_data_dir, stack_subset
    from local.stack import EmbeddedStack

    root = tmp_path_factory.mktemp("frontend")
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml", keep=FRONTEND_FUNCTIONS)
    stack = EmbeddedStack(stack_file, data_dir, env={"MXT_DATA_DIR": str(data_dir)})
    stack.start(timeout=240)
    yield stack
    stack.stop()
