"""Faults: a brick killed mid-run, NATS restarted mid-run, a brick that always fails, and
twenty observations at once."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from local.chainkit import prepare_data_dir, stack_subset
from local.natsd import NatsServer
from local.stack import EmbeddedStack
from tests.chains.conftest import RunsClient, assert_products_once

HERE = Path(__file__).parent


def wait_for_task(runs: RunsClient, run_id: str, brick: str, states: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = next(t for t in runs.run(run_id)["tasks"] if t["brick"] == brick)
        if task["state"] in states:
            return
        time.sleep(0.02)
    raise AssertionError(f"{brick} of {run_id} never reached {states}")


def kill_mid_run_then_complete(runs: RunsClient, l0: Any, function: str) -> None:
    """SIGKILL every replica of ``function`` once calibrate is dispatched; the run must
    still succeed, on new replicas, with every product registered once."""
    run_id = runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"]
    wait_for_task(runs, run_id, "calibrate", ("dispatched", "running"))
    victims = runs.stack.replica_pids(function)
    assert victims
    for pid in victims:
        psutil.Process(pid).send_signal(signal.SIGKILL)
    run = runs.wait(run_id)
    assert run["state"] == "succeeded", run["reason"]
    assert not set(victims) & set(runs.stack.replica_pids(function))
    assert len(assert_products_once(runs, run_id)) == 20


def test_brick_killed_mid_run_is_restarted_and_the_run_completes(
    runs: RunsClient, observation_factory: Any
) -> None:
    kill_mid_run_then_complete(runs, observation_factory()[0], "brick-calibrate")


def test_advance_killed_mid_run_its_completions_are_redelivered(
    runs: RunsClient, observation_factory: Any
) -> None:
    """orchestrator-advance (delivered directly by the connector) killed while bricks
    run: completions wait for its restart, or come back by redelivery if the call broke."""
    kill_mid_run_then_complete(runs, observation_factory(seed=31)[0], "orchestrator-advance")


def test_twenty_observations_at_once_all_complete(
    runs: RunsClient, observation_factory: Any
) -> None:
    observations = [observation_factory(seed=100 + i)[0] for i in range(20)]
    refs = [runs.upload_raw(l0, l0[0].header["OBS_ID"]) for l0 in observations]
    with ThreadPoolExecutor(20) as pool:
        started = list(pool.map(runs.started, refs))
    run_ids = [run["run_id"] for run in started]
    assert len(set(run_ids)) == 20
    for run_id in run_ids:
        run = runs.wait(run_id, timeout=300)
        assert run["state"] == "succeeded", (run_id, run["reason"])
        assert len(assert_products_once(runs, run_id)) == 20


@pytest.fixture()
def own_stack(tmp_path: Path) -> Any:
    """A stack of the test's own: ``make(nats_url=None, extra=None, env=None)``."""
    stacks: list[EmbeddedStack] = []

    def make(
        nats_url: str | None = None, extra: dict | None = None, env: dict | None = None
    ) -> RunsClient:
        data_dir = tmp_path / f"data{len(stacks)}"
        prepare_data_dir(data_dir)
        stack_file = stack_subset(tmp_path / f"stack{len(stacks)}.yml", extra=extra)
        stack = EmbeddedStack(
            stack_file,
            data_dir,
            nats_url=nats_url,
            env={"MXT_DATA_DIR": str(data_dir), **(env or {})},
        )
        stacks.append(stack.start(timeout=90))
        return RunsClient(stack)

    yield make
    for stack in stacks:
        stack.stop()


def test_nats_restarted_mid_run_the_run_completes(
    own_stack: Any, nats_fresh: NatsServer, observation_factory: Any
) -> None:
    runs = own_stack(nats_url=nats_fresh.url)
    l0, _ = observation_factory()
    run_id = runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"]
    wait_for_task(runs, run_id, "coordinates", ("dispatched", "running"))
    nats_fresh.stop()
    time.sleep(1.0)
    nats_fresh.start()
    run = runs.wait(run_id, timeout=180)
    assert run["state"] == "succeeded", run["reason"]
    assert len(assert_products_once(runs, run_id)) == 20


def test_brick_that_always_fails_fails_the_run_with_its_reason(
    own_stack: Any, observation_factory: Any
) -> None:
    failing = {
        "brick-spectrum": {
            "lang": "python3-mxt",
            "handler": str(HERE / "failing_brick"),
            "image": "mxt/failing-brick:test",
        }
    }
    runs = own_stack(extra=failing, env={"MXT_MAX_ATTEMPTS": "2", "MXT_RETRY_BASE_DELAY": "0.05"})
    l0, _ = observation_factory()
    run = runs.wait(runs.started(runs.upload_raw(l0, l0[0].header["OBS_ID"]))["run_id"])
    assert run["state"] == "failed"
    assert "brick spectrum failed" in run["reason"] and "injected fault" in run["reason"]
    states = {t["brick"]: t["state"] for t in run["tasks"]}
    assert states["spectrum"] == "failed" and states["quicklook"] == "skipped"
    spectrum = next(t for t in run["tasks"] if t["brick"] == "spectrum")
    assert spectrum["attempts"] == 2  # the orchestrator's retry after the worker's
    products = runs.products(run["run_id"])
    assert products and all(p["partial"] for p in products)
    errors = runs.logs(run["run_id"], level="ERROR")
    assert any("injected fault" in line["message"] for line in errors)
    letters = runs.http.get(f"{runs.url}/system/dead-letters", auth=runs.stack.auth).json()
    dead = {letter["call"]["call_id"] for letter in letters}
    assert {f"{run['run_id']}_spectrum_1", f"{run['run_id']}_spectrum_2"} <= dead
