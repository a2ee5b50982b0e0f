"""Every stream the platform declares is bounded in bytes, on a real nats-server.

New streams get ``max_bytes`` and ``max_msg_size``; an existing unbounded stream is
brought to them in place (same messages, same creation time); the bounds hold: a full
kept stream drops its oldest messages, the full async work queue refuses new calls.
"""

from __future__ import annotations

from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError

from gateway import messages as m
from gateway.infrastructure import (
    async_message_bytes,
    declare,
    ensure_stream,
    kept_stream,
    stream_configs,
)
from gateway.settings import GatewaySettings
from storage.events import ensure_storage_stream, storage_stream_config

PLATFORM_STREAMS = (
    m.ASYNC_STREAM,
    m.DLQ_STREAM,
    m.CALLS_STREAM,
    m.STORAGE_STREAM,
    m.EVENTS_STREAM,
)


@pytest.fixture()
async def js(nats_fresh: Any) -> Any:
    nc = await nats.connect(nats_fresh.url)
    yield nc.jetstream()
    await nc.close()


async def test_declared_streams_have_byte_limits(js: Any) -> None:
    settings = GatewaySettings()
    await declare(js, settings)
    for name in PLATFORM_STREAMS:
        config = (await js.stream_info(name)).config
        assert config.max_bytes == settings.stream_max_bytes == 256 * 1024 * 1024, name
        assert config.max_msg_size >= settings.stream_max_msg_bytes == 1024 * 1024, name
    queue = (await js.stream_info(m.ASYNC_STREAM)).config
    assert DiscardPolicy(queue.discard) is DiscardPolicy.NEW
    # a base64 async body of the largest size fits a queued call and its dead letter
    largest = 4 * -(-settings.max_async_body_bytes // 3)
    for name in (m.ASYNC_STREAM, m.DLQ_STREAM):
        assert (await js.stream_info(name)).config.max_msg_size > largest


async def test_an_existing_unbounded_stream_is_bounded_in_place(js: Any) -> None:
    await js.add_stream(name=m.EVENTS_STREAM, subjects=["mxt.events.>"])
    for n in range(20):
        await js.publish(f"mxt.events.log.r{n}", b"x" * 100)
    before = await js.stream_info(m.EVENTS_STREAM)
    assert before.config.max_bytes in (None, -1)
    assert before.config.max_msg_size in (None, -1)

    settings = GatewaySettings(stream_max_bytes=1 << 20, stream_max_msg_bytes=4096)
    await declare(js, settings)

    after = await js.stream_info(m.EVENTS_STREAM)
    assert after.config.max_bytes == 1 << 20
    assert after.config.max_msg_size == 4096
    assert after.config.max_age == 30 * 24 * 3600
    assert after.created == before.created  # updated, not recreated
    assert after.state.messages == 20  # under the new bound: nothing dropped
    with pytest.raises(APIError, match="message size exceeds maximum"):
        await js.publish("mxt.events.log.big", b"x" * 5000)

    # the next start with the defaults raises them again
    await declare(js, GatewaySettings())
    again = await js.stream_info(m.EVENTS_STREAM)
    assert again.config.max_bytes == 256 * 1024 * 1024
    assert again.created == before.created and again.state.messages == 20


async def test_full_streams_drop_the_oldest_and_the_queue_refuses(js: Any) -> None:
    settings = GatewaySettings(stream_max_bytes=64 * 1024)
    await declare(js, settings)
    for n in range(200):
        await js.publish(f"mxt.events.log.r{n}", b"x" * 1000)
    events = (await js.stream_info(m.EVENTS_STREAM)).state
    assert events.bytes <= 64 * 1024
    assert events.last_seq == 200 and events.first_seq > 1  # the newest kept

    accepted = 0
    with pytest.raises(APIError, match="maximum bytes exceeded"):
        for _ in range(200):
            await js.publish("mxt.async.fn", b"y" * 1000)
            accepted += 1
    queue = (await js.stream_info(m.ASYNC_STREAM)).state
    assert 0 < accepted < 200
    assert queue.messages == accepted and queue.first_seq == 1  # nothing queued was lost


async def test_topic_stream_of_the_connector_is_bounded(js: Any, monkeypatch) -> None:
    monkeypatch.setenv("MXT_STREAM_MAX_BYTES", str(8 << 20))
    monkeypatch.setenv("MXT_STREAM_MAX_MSG_BYTES", "65536")
    # what gateway.connector does for a topic no stream holds
    await ensure_stream(js, kept_stream(m.TOPICS_STREAM, ["custom.a"], 7, 600.0))
    await ensure_stream(js, kept_stream(m.TOPICS_STREAM, ["custom.b"], 7, 600.0))
    config = (await js.stream_info(m.TOPICS_STREAM)).config
    assert sorted(config.subjects) == ["custom.a", "custom.b"]
    assert config.max_bytes == 8 << 20
    assert config.max_msg_size == 65536


async def test_storage_stream_declared_by_storage_matches_the_gateway(js: Any, monkeypatch) -> None:
    gateway_storage = next(c for c in stream_configs(GatewaySettings()) if c.name == "MXT_STORAGE")
    ours = storage_stream_config()
    for field in ("subjects", "max_age", "max_bytes", "max_msg_size", "discard"):
        assert getattr(ours, field) == getattr(gateway_storage, field), field

    monkeypatch.setenv("MXT_STREAM_MAX_BYTES", str(4 << 20))
    await ensure_storage_stream(js)  # what objects-upload does before the gateway
    config = (await js.stream_info(m.STORAGE_STREAM)).config
    assert config.max_bytes == 4 << 20
    assert config.max_msg_size == 1024 * 1024
    monkeypatch.setenv("MXT_STREAM_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="MXT_STREAM_MAX_BYTES='lots' is not an integer"):
        storage_stream_config()


def test_async_messages_always_fit_the_largest_async_body() -> None:
    small = GatewaySettings(max_async_body_bytes=3 * 1024 * 1024, stream_max_msg_bytes=1024)
    assert async_message_bytes(small) == 4 * 1024 * 1024 + 64 * 1024
    assert async_message_bytes(GatewaySettings()) == 1024 * 1024
