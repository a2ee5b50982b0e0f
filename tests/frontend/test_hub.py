"""The websocket hub against a real nats-server and a real uvicorn process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import nats
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.events import LogLine, RunStateChanged, TaskStateChanged
from gateway.infrastructure import SHARED_STREAMS, ensure_stream, kept_stream
from gateway.messages import EVENTS_STREAM


async def _events_stream(url: str) -> Any:
    """A NATS connection and JetStream with the events stream declared as the gateway does."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js, kept_stream(EVENTS_STREAM, SHARED_STREAMS[EVENTS_STREAM], 1, 120))
    return nc, js


_EVENT_TYPES = {"run": RunStateChanged, "task": TaskStateChanged, "log": LogLine}


async def _publish(js: Any, kind: str, run_id: str, **fields: Any) -> int:
    """Publish one typed event as the orchestrator does; its stream sequence."""
    defaults = {
        "run": {"programme": "ToO", "state": "running"},
        "task": {"task": "detect", "state": "running", "attempt": 1},
        "log": {"level": "INFO", "function": "brick-detect", "message": "line"},
    }[kind]
    event = _EVENT_TYPES[kind](run_id=run_id, **{**defaults, **fields})
    ack = await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.msg_id()})
    assert not ack.duplicate
    return int(ack.seq)


async def _frame(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 60))


async def _events_until(ws: Any, last_seq: int) -> list[dict[str, Any]]:
    """Event frames up to and including stream sequence ``last_seq``."""
    frames = []
    while True:
        frame = await _frame(ws)
        if frame["type"] == "event":
            frames.append(frame)
            if frame["seq"] >= last_seq:
                return frames


async def test_reconnecting_client_resumes_without_gap_or_duplicate(hub_nats, hub_address):
    nc, js = await _events_stream(hub_nats.url)
    url = f"ws://{hub_address}/events?run=R1"
    steady = await websockets.connect(url)
    flaky = await websockets.connect(url)
    hello_steady, hello_flaky = await _frame(steady), await _frame(flaky)
    assert hello_steady["type"] == hello_flaky["type"] == "hello"
    assert hello_steady["filters"]["run"] == "R1"

    expected = [await _publish(js, "run", "R1", state="running")]
    for i in range(30):
        expected.append(await _publish(js, "task", "R1", attempt=i + 1))
        await _publish(js, "task", "R2", attempt=i + 1)  # another run
    first_part = await _events_until(flaky, expected[10])
    flaky.transport.abort()  # the link drops mid-run, frames still in flight are lost

    # Published while the flaky client is away: it must get them on resume.
    for i in range(30):
        expected.append(await _publish(js, "log", "R1", message=f"line {i}"))
    expected.append(await _publish(js, "run", "R1", state="succeeded"))

    resumed = await websockets.connect(f"{url}&since_seq={first_part[-1]['seq']}")
    hello_resumed = await _frame(resumed)
    assert hello_resumed["since_seq"] == first_part[-1]["seq"]
    assert hello_resumed["gap"] is False
    second_part = await _events_until(resumed, expected[-1])
    steady_all = await _events_until(steady, expected[-1])

    flaky_seqs = [f["seq"] for f in first_part + second_part]
    assert flaky_seqs == expected
    assert [f["seq"] for f in steady_all] == expected
    assert all(f["run_id"] == "R1" for f in steady_all)
    assert steady_all[-1]["event"]["state"] == "succeeded"
    for ws in (steady, resumed):
        await ws.close()
    await nc.close()


async def test_since_seq_replays_history_and_filters_apply(hub_nats, hub_address):
    nc, js = await _events_stream(hub_nats.url)
    before = (await js.stream_info(EVENTS_STREAM)).state.last_seq  # other tests' events
    await _publish(js, "run", "r-7", programme="ToO")
    await _publish(js, "run", "r-8", programme="GP")
    tasks = [await _publish(js, "task", "r-7", task="detect")]
    log_7 = await _publish(js, "log", "r-7", message="x")
    tasks.append(await _publish(js, "task", "r-8", task="detect"))
    await _publish(js, "run", "r-9", programme="ToO")
    last = await _publish(js, "task", "r-9", task="notice")
    tasks.append(last)
    await _publish(js, "task", "r-unknown", task="notice")  # a run without run events

    ws = await websockets.connect(f"ws://{hub_address}/events?kind=task&since_seq={before}")
    await _frame(ws)
    frames = await _events_until(ws, last)
    assert [f["seq"] for f in frames] == tasks
    assert all(f["kind"] == "task" for f in frames)
    await ws.close()

    # Task and log events carry no programme: the hub finds it from the run's events.
    ws = await websockets.connect(f"ws://{hub_address}/events?programme=too&since_seq={before}")
    await _frame(ws)
    frames = await _events_until(ws, last)
    assert {f["run_id"] for f in frames} == {"r-7", "r-9"}
    assert [f["seq"] for f in frames if f["run_id"] == "r-7"][-2:] == [tasks[0], log_7]
    assert len(frames) == 5
    await ws.close()
    await nc.close()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("kind=bogus", "kind"),
        ("kind=task,whatever", "kind"),
        ("programme=XYZ", "programme"),
        ("since_seq=-3", "since_seq"),
        ("since_seq=abc", "since_seq"),
        ("run=a.b", "run"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_filter_closes_with_reason(hub_nats, hub_address, query, named):
    ws = await websockets.connect(f"ws://{hub_address}/events?{query}")
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 60)
    assert closed.value.rcvd.code == 1008
    assert named in closed.value.rcvd.reason


async def test_read_only_pings_answered_other_messages_close(hub_nats, hub_address):
    nc, _ = await _events_stream(hub_nats.url)
    ws = await websockets.connect(f"ws://{hub_address}/events")
    assert (await _frame(ws))["type"] == "hello"
    await ws.send("ping")
    assert (await _frame(ws)) == {"type": "pong"}
    await ws.send('{"publish": "mxt.events.run.X"}')
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 60)
    assert closed.value.rcvd.code == 1008
    assert "read-only" in closed.value.rcvd.reason
    await nc.close()


async def test_resume_past_expired_events_is_flagged_as_gap(nats_fresh, bare_hub_address):
    nc = await nats.connect(nats_fresh.url)
    js = nc.jetstream()
    # a stream that keeps 5 messages: older ones expire, as after 30 days in production
    await js.add_stream(name=EVENTS_STREAM, subjects=["mxt.events.>"], max_msgs=5)
    seqs = [await _publish(js, "task", "r-gap", attempt=i + 1) for i in range(10)]
    ws = await websockets.connect(f"ws://{bare_hub_address}/events?since_seq={seqs[0]}")
    hello = await _frame(ws)
    assert hello["gap"] is True
    frames = await _events_until(ws, seqs[-1])
    assert [f["seq"] for f in frames] == seqs[-5:]
    await ws.close()
    await nc.close()


async def test_missing_events_stream_closes_with_reason(bare_hub_address):
    ws = await websockets.connect(f"ws://{bare_hub_address}/events")
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 60)
    assert closed.value.rcvd.code == 1011
    assert EVENTS_STREAM in closed.value.rcvd.reason


def _raw_websocket(address: str, path: str) -> socket.socket:
    """A websocket opened by hand on a socket with a small fixed receive buffer.

    The kernel does not grow a fixed buffer, so a client that stops reading blocks the
    server after a few hundred kilobytes, as a stalled browser on a poor link would.
    """
    host, port = address.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the complete unmasked frames at the start of ``data``."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length, start = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        extended = {126: ("!H", 2), 127: ("!Q", 8)}.get(length)
        if extended is not None:
            if start + extended[1] > len(data):
                break  # the length itself has not fully arrived yet
            length = struct.unpack(extended[0], data[start : start + extended[1]])[0]
            start += extended[1]
        if start + length > len(data):
            break
        frames.append((opcode, data[start : start + length]))
        at = start + length
    return frames


def _read_until_close(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every server frame up to and including its close frame."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
        frames = _parse_frames(data)
        if frames and frames[-1][0] == 0x8:
            return frames
    return _parse_frames(data)


async def test_slow_client_dropped_while_others_get_everything(hub_nats, hub_address):
    nc, js = await _events_stream(hub_nats.url)
    path = "/events?run=R3"
    slow = await asyncio.to_thread(_raw_websocket, hub_address, path)
    fast = await websockets.connect(f"ws://{hub_address}{path}", max_size=2**22)
    await _frame(fast)
    filler = "x" * 60_000  # a long log line, so the socket buffers fill quickly
    published = [
        await _publish(js, "log", "R3", message=filler, line_time=str(i)) for i in range(300)
    ]
    got = await _events_until(fast, published[-1])
    assert [f["seq"] for f in got] == published

    frames = await asyncio.to_thread(_read_until_close, slow)
    events = [json.loads(p) for op, p in frames if op == 0x1 and b'"event"' in p[:20]]
    assert 0 < len(events) < len(published)
    assert [e["seq"] for e in events] == published[: len(events)]  # in order, no gap
    close_op, close_payload = frames[-1]
    assert close_op == 0x8
    assert struct.unpack("!H", close_payload[:2])[0] == 1013
    assert b"too slow" in close_payload[2:]
    await fast.close()
    await nc.close()


async def test_unknown_http_path_is_json_404(hub_address):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        await asyncio.to_thread(urllib.request.urlopen, f"http://{hub_address}/nope")
    assert error.value.code == 404
    assert json.loads(error.value.read())["detail"] == "Not Found"


async def test_clients_keep_their_place_across_a_nats_restart(nats_fresh, bare_hub_address):
    nc, js = await _events_stream(nats_fresh.url)
    ws = await websockets.connect(f"ws://{bare_hub_address}/events?run=r-restart")
    await _frame(ws)
    before = [await _publish(js, "task", "r-restart", attempt=i + 1) for i in range(5)]
    assert [f["seq"] for f in await _events_until(ws, before[-1])] == before
    await nc.close()

    await asyncio.to_thread(nats_fresh.restart)  # the stream is on disk, consumers are not
    nc, js = await _events_stream(nats_fresh.url)
    after = [await _publish(js, "task", "r-restart", attempt=i + 6) for i in range(5)]
    frames = await _events_until(ws, after[-1])
    assert [f["seq"] for f in frames] == after  # no gap, no repeat of the first five
    await ws.close()
    await nc.close()
