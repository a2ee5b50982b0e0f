"""Issue 11, the stall watchdog: a task whose call is lost is dispatched again.

As found: a task marked ``dispatched`` with no call in flight (the dispatch lost
between the claim and the queue) kept its run ``running`` for ever, across restarts.
Here the loss is made for real: the call id of the run's first brick is already taken
in ``MXT_CALL_STATUS`` when the orchestrator dispatches it, so the queue drops the
call as a duplicate; then that status is deleted, and no trace of the call is left
in the queue or the status bucket. The stack's watchdog runs with a 2 s budget.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from gateway import messages as m
from gateway.natsconn import connect
from local.stack import EmbeddedStack
from tests.chains.conftest import RunsClient
from tests.operations.conftest import fresh_stack

STALL_SECONDS = "2"


@pytest.fixture(scope="module")
def watched_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    stack = fresh_stack(tmp_path_factory.mktemp("watchdog"), MXT_TASK_STALL_SECONDS=STALL_SECONDS)
    yield stack
    stack.stop()


async def _status_bucket(
    nats_url: str, action: str, call_id: str, state: str = "queued", code: int | None = None
) -> Any:
    nc = await connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(m.STATUS_BUCKET)
        if action == "take":
            taken = m.CallStatus(
                call_id=call_id, function="brick-ingest", state=state, status_code=code
            )
            await kv.create(call_id, taken.to_bytes())
        elif action == "delete":
            await kv.purge(call_id)
        else:
            try:
                entry = await kv.get(call_id)
            except Exception:
                return None
            return entry.value and m.CallStatus.model_validate_json(entry.value)
    finally:
        await nc.close()


def test_a_lost_dispatch_is_rescued(watched_stack: Any, observation_factory: Any) -> None:
    runs = RunsClient(watched_stack)
    l0, _ = observation_factory(seed=7)
    raw = runs.upload_raw(l0, l0[0].header["OBS_ID"])
    run_id = f"r-lost-{secrets.token_hex(3)}"
    lost = f"{run_id}_ingest_1"
    asyncio.run(_status_bucket(watched_stack.nats_url, "take", lost))

    started = runs.started(raw, run_id=run_id)
    ingest = next(t for t in started["tasks"] if t["brick"] == "ingest")
    assert ingest["state"] == "dispatched"  # claimed; its call dropped as a "duplicate"
    asyncio.run(_status_bucket(watched_stack.nats_url, "delete", lost))
    # nothing in flight now: without the watchdog this run stays running for ever

    run = runs.wait(run_id, timeout=60)
    ingest = next(t for t in run["tasks"] if t["brick"] == "ingest")
    print(f"lost dispatch: run {run['state']}, ingest attempts {ingest.get('attempts')}")
    assert run["state"] == "succeeded", run
    assert ingest.get("attempts") == 2, ingest
    assert asyncio.run(_status_bucket(watched_stack.nats_url, "get", f"{run_id}_ingest_2"))
    # the reason of the second attempt stays on the task
    assert "lost" in (ingest.get("error") or ""), ingest


@pytest.mark.parametrize(
    ("state", "code", "why"),
    [
        # the message purged from MXT_ASYNC, its status left "queued"
        ("queued", None, "queued without a change"),
        # the call failed (503) but its completion never reached the orchestrator
        ("failed", 503, "completion never received (HTTP 503"),
    ],
)
def test_a_call_stuck_or_finished_unseen_is_rescued(
    watched_stack: Any, observation_factory: Any, state: str, code: int | None, why: str
) -> None:
    runs = RunsClient(watched_stack)
    l0, _ = observation_factory(seed=9)
    raw = runs.upload_raw(l0, l0[0].header["OBS_ID"])
    run_id = f"r-stuck-{secrets.token_hex(3)}"
    asyncio.run(_status_bucket(watched_stack.nats_url, "take", f"{run_id}_ingest_1", state, code))
    runs.started(raw, run_id=run_id)  # its ingest call dropped: the id was taken

    run = runs.wait(run_id, timeout=60)
    ingest = next(t for t in run["tasks"] if t["brick"] == "ingest")
    print(f"call {state} and never completed: run {run['state']}, ingest {ingest['error']!r}")
    assert run["state"] == "succeeded", run
    assert ingest["attempts"] == 2 and why in (ingest["error"] or ""), ingest
