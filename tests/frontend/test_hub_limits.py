"""The websocket hub is bounded: clients at once, replay depth, ``since_seq`` values.

Real uvicorn processes of the hub on a real nats-server (``hub_nats``): one with low
caps (5 clients, a 20-sequence replay), one with the default cap of 100 clients that
300 clients try at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.hub import DEFAULT_MAX_CLIENTS, MAX_SEQUENCE
from gateway.messages import EVENTS_STREAM
from local.natsd import NatsServer
from tests.frontend.conftest import HUB_ENV, serve_factory
from tests.frontend.test_hub import _events_stream, _events_until, _frame, _publish

CAP = 5
REPLAY = 20
_ATTEMPTS = itertools.count(1)


async def _task_event(js: Any, run_id: str) -> int:
    """Publish a task event of its own (a fresh attempt: never a duplicate); its sequence."""
    return await _publish(js, "task", run_id, attempt=next(_ATTEMPTS))


@pytest.fixture(scope="module")
def capped_hub(hub_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub serving at most 5 clients, replaying at most 20 sequences."""
    env = {
        "MXT_NATS_URL": hub_nats.url,
        **HUB_ENV,
        "MXT_WS_MAX_CLIENTS": str(CAP),
        "MXT_WS_MAX_REPLAY": str(REPLAY),
    }
    log = tmp_path_factory.mktemp("capped-hub") / "hub.log"
    with serve_factory("gateway.hub:create_app", env, log) as address:
        yield address


@pytest.fixture(scope="module")
def default_hub(hub_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub with the default caps."""
    env = {"MXT_NATS_URL": hub_nats.url, **HUB_ENV}
    log = tmp_path_factory.mktemp("default-hub") / "hub.log"
    with serve_factory("gateway.hub:create_app", env, log) as address:
        yield address


def _describe(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as answer:
        return json.loads(answer.read())


async def _clients_drop_to(address: str, count: int) -> None:
    """Wait until the hub serves ``count`` clients (a hang guard, not a timing)."""
    for _ in range(600):
        if (await asyncio.to_thread(_describe, address))["clients"] == count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the hub still serves more than {count} clients")


async def _open(url: str) -> tuple[Any, dict[str, Any] | None, Any]:
    """Connect; ``(socket, hello, None)`` when served, ``(socket, None, close)`` when not."""
    ws = await websockets.connect(url, open_timeout=60)
    try:
        return ws, await _frame(ws), None
    except ConnectionClosed as closed:
        return ws, None, closed.rcvd


async def test_the_client_past_the_cap_is_told_to_try_again_later(hub_nats, capped_hub):
    nc, js = await _events_stream(hub_nats.url)
    url = f"ws://{capped_hub}/events?run=cap-1"
    served = [await _open(url) for _ in range(CAP)]
    assert all(hello is not None and hello["type"] == "hello" for _, hello, _ in served)
    assert _describe(capped_hub)["clients"] == CAP

    refused, hello, close = await _open(url)
    assert hello is None
    assert close.code == 1013
    assert "try again later" in close.reason and "MXT_WS_MAX_CLIENTS" in close.reason

    # the five served go on getting events
    seq = await _task_event(js, "cap-1")
    for ws, _, _ in served:
        assert [f["seq"] for f in await _events_until(ws, seq)] == [seq]
        await ws.close()

    await _clients_drop_to(capped_hub, 0)
    again, hello, _ = await _open(url)
    assert hello is not None and hello["type"] == "hello"
    seq = await _task_event(js, "cap-1")
    assert [f["seq"] for f in await _events_until(again, seq)] == [seq]
    await again.close()
    await nc.close()


async def test_a_deep_replay_gives_the_last_events_with_a_gap(hub_nats, capped_hub):
    nc, js = await _events_stream(hub_nats.url)
    seqs = [await _publish(js, "log", "deep-1", message=f"m{i}") for i in range(REPLAY + 30)]
    last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
    assert last == seqs[-1]
    ws, hello, _ = await _open(f"ws://{capped_hub}/events?since_seq=0")
    assert hello["since_seq"] == last - REPLAY
    assert hello["gap"] is True  # the client should reload what it shows
    frames = await _events_until(ws, last)
    assert [f["seq"] for f in frames] == list(range(last - REPLAY + 1, last + 1))
    await ws.close()

    # within the cap: no gap, every event after since_seq
    ws, hello, _ = await _open(f"ws://{capped_hub}/events?run=deep-1&since_seq={seqs[-10]}")
    assert hello["gap"] is False and hello["since_seq"] == seqs[-10]
    assert [f["seq"] for f in await _events_until(ws, last)] == seqs[-9:]
    await ws.close()

    # past the end (a stream recreated since): from the end, flagged
    ws, hello, _ = await _open(f"ws://{capped_hub}/events?since_seq={MAX_SEQUENCE}")
    assert hello["since_seq"] == last and hello["gap"] is True
    seq = await _publish(js, "log", "deep-1")
    assert [f["seq"] for f in await _events_until(ws, seq)] == [seq]
    await ws.close()
    await nc.close()


@pytest.mark.parametrize(
    "value",
    [str(MAX_SEQUENCE + 1), "1" + "0" * 30, "9" * 5000, "-1", "1.5", "1e3", "٣", "0x10", " 1"],
)
async def test_out_of_range_since_seq_is_refused_with_a_reason(hub_nats, capped_hub, value):
    url = f"ws://{capped_hub}/events?since_seq={urllib.parse.quote(value)}"
    ws, hello, close = await _open(url)
    assert hello is None
    assert close.code == 1008
    assert f"since_seq: expected an integer from 0 to {MAX_SEQUENCE}" == close.reason
    await _clients_drop_to(capped_hub, 0)  # a refused client leaves no slot taken


async def test_300_clients_against_the_default_cap(hub_nats, default_hub):
    nc, js = await _events_stream(hub_nats.url)
    url = f"ws://{default_hub}/events?run=crowd-1"
    results = await asyncio.gather(*(_open(url) for _ in range(300)))
    served = [ws for ws, hello, _ in results if hello is not None]
    refused = [close for _, hello, close in results if hello is None]
    assert len(served) == DEFAULT_MAX_CLIENTS == 100
    assert len(refused) == 200
    assert all(close.code == 1013 and "try again later" in close.reason for close in refused)

    # the hub is healthy: it answers, and every served client gets the next event
    assert _describe(default_hub)["clients"] == 100
    seq = await _task_event(js, "crowd-1")
    got = await asyncio.gather(*(_events_until(ws, seq) for ws in served))
    assert all([f["seq"] for f in frames] == [seq] for frames in got)

    await asyncio.gather(*(ws.close() for ws, _, _ in results))
    await _clients_drop_to(default_hub, 0)
    fresh, hello, _ = await _open(url)
    assert hello is not None
    seq = await _task_event(js, "crowd-1")
    assert [f["seq"] for f in await _events_until(fresh, seq)] == [seq]
    await fresh.close()
    await nc.close()


def test_invalid_cap_settings_are_named(monkeypatch) -> None:
    from gateway.hub import create_app

    monkeypatch.setenv("MXT_WS_MAX_CLIENTS", "many")
    with pytest.raises(ValueError, match="MXT_WS_MAX_CLIENTS='many' is not an integer"):
        create_app()
    monkeypatch.setenv("MXT_WS_MAX_CLIENTS", "10")
    monkeypatch.setenv("MXT_WS_MAX_REPLAY", "0")
    with pytest.raises(ValueError, match="MXT_WS_MAX_REPLAY='0' must be positive"):
        create_app()
