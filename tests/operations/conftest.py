"""Stacks for the operations tests: each test module gets a fresh stack (a cold
orchestrator: its first calls are the test's), with settings of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.chainkit import prepare_data_dir, stack_subset
from local.stack import EmbeddedStack
from storage.events import publish_object_created
from tests.chains.conftest import RunsClient, local_store


@pytest.fixture(scope="session")
def observation_factory() -> Any:
    """``make(obs_id, program, seed) -> (l0, truth)``: a 300 s afterglow observation (a
    few hundred events: the operations tests run dozens of chains at once)."""
    import uuid

    from bricks.simulate import simulate
    from local.chainkit import afterglow_scene

    def make(obs_id: str | None = None, program: str = "TargetOfOpportunity-Nom", seed: int = 3):
        scene = afterglow_scene(obs_id or f"t{uuid.uuid4().hex[:10]}", program, seed, 300.0)
        return simulate(scene)

    return make


def fresh_stack(root: Path, **env: str) -> EmbeddedStack:
    """A started chain stack (orchestrator and bricks) in ``root``, nothing called yet."""
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml")
    stack = EmbeddedStack(stack_file, data_dir, env={"MXT_DATA_DIR": str(data_dir), **env})
    stack.start(timeout=90)
    return stack


@pytest.fixture(scope="module")
def cold_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    stack = fresh_stack(tmp_path_factory.mktemp("operations"))
    yield stack
    stack.stop()


def arrive(runs: RunsClient, key: str, body: bytes) -> None:
    """Put an object in the raw bucket and publish its object-created event, as MinIO does."""
    store = local_store(runs.stack.data_dir)
    store.put("raw", key, body, content_type="application/octet-stream")
    asyncio.run(publish_object_created(runs.stack.nats_url, store.head("raw", key)))


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    """The first truthy value of ``predicate()``; the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)
