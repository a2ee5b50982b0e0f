"""Direct topic delivery (``com.mxt.topic-delivery: direct``): the connector calls the
function for each message, acks on success, lets JetStream redeliver after a transient
failure, and dead-letters after a permanent failure or the last attempt."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from gateway.connector import Binding
from local.stack import EmbeddedStack
from tests.gateway.conftest import wait_for

SUBJECT = "mxt.events.direct.test"


async def publish(stack: EmbeddedStack, body: dict[str, Any]) -> int:
    """Publish ``body`` on the direct function's subject; the stream sequence."""
    nc = await nats.connect(stack.nats_url)
    try:
        return (await nc.jetstream().publish(SUBJECT, json.dumps(body).encode())).seq
    finally:
        await nc.close()


async def consumer_settled(stack: EmbeddedStack) -> bool:
    """Whether the binding's consumer has nothing pending and nothing unacked."""
    durable = Binding("topic-direct", "mxt.events.direct.>").durable
    nc = await nats.connect(stack.nats_url)
    try:
        info = await nc.jetstream().consumer_info("MXT_EVENTS", durable)
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


def attempts(state_dir: Path, key: str) -> int:
    """Calls fail-n-times has seen for ``key`` (its counter file)."""
    path = state_dir / f"{key}.attempts"
    return int(path.read_text() or 0) if path.exists() else 0


def letters_of(admin: httpx.Client, key: str) -> list[dict[str, Any]]:
    """Dead letters of the direct function whose body names ``key``."""
    return [
        letter
        for letter in admin.get("/system/dead-letters").json()
        if letter["call"]["function"] == "topic-direct"
        and json.loads(base64.b64decode(letter["call"]["body_b64"])).get("key") == key
    ]


@pytest.fixture()
async def bound(stack: EmbeddedStack) -> EmbeddedStack:
    """The stack once the direct binding's consumer exists."""
    durable = Binding("topic-direct", "mxt.events.direct.>").durable
    nc = await nats.connect(stack.nats_url)
    try:
        for _ in range(600):
            names = [c.name for c in await nc.jetstream().consumers_info("MXT_EVENTS")]
            if durable in names:
                return stack
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    raise AssertionError(f"consumer {durable} never appeared")


async def test_direct_message_retried_until_it_succeeds(
    bound: EmbeddedStack, admin: httpx.Client, tmp_path: Path
) -> None:
    body = {"key": "direct-ok", "failures": 2, "retry_after_seconds": 0, "state_dir": str(tmp_path)}
    await publish(bound, body)
    wait_for(lambda: attempts(tmp_path, "direct-ok") == 3)
    for _ in range(600):
        if await consumer_settled(bound):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the message was never acked")
    assert attempts(tmp_path, "direct-ok") == 3  # acked: not called again
    assert letters_of(admin, "direct-ok") == []


async def test_direct_message_dead_lettered_after_the_last_attempt(
    bound: EmbeddedStack, admin: httpx.Client, client: httpx.Client, tmp_path: Path
) -> None:
    body = {"key": "direct-dlq", "failures": 9, "retry_after_seconds": 0}
    body["state_dir"] = str(tmp_path)
    await publish(bound, body)
    letter = wait_for(lambda: letters_of(admin, "direct-dlq"), timeout=60)[0]
    assert letter["attempts"] == 8 and letter["status_code"] == 503
    assert "planned failure 8 of 9" in letter["reason"]
    assert letter["call"]["call_id"].startswith("topic-MXT_EVENTS-")
    assert attempts(tmp_path, "direct-dlq") == 8
    # delivered by the connector itself: no async call was queued for it
    call_id = letter["call"]["call_id"]
    assert client.get(f"/async-function/status/{call_id}").status_code == 404
    # the redriven letter runs as a durable async call: failure 9, then success
    assert admin.post(f"/system/dead-letters/{call_id}/redrive").status_code == 202
    wait_for(lambda: attempts(tmp_path, "direct-dlq") == 10, timeout=60)
    assert client.get(f"/async-function/status/{call_id}").json()["state"] == "succeeded"


async def test_direct_message_with_a_bad_body_is_dead_lettered_at_once(
    bound: EmbeddedStack, admin: httpx.Client
) -> None:
    await publish(bound, {"key": "direct-bad", "failures": "many"})
    letter = wait_for(lambda: letters_of(admin, "direct-bad"), timeout=60)[0]
    assert letter["attempts"] == 1 and letter["status_code"] == 422
    assert "failures" in letter["reason"]
