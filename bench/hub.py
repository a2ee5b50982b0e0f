"""Websocket hub benchmark: prints figures, asserts nothing.

A private nats-server and the hub in its own uvicorn process, as the gateway would
serve it; N websocket clients follow one run while events are published on JetStream
(``gateway.events`` models, with their ``Nats-Msg-Id``), one at a time with a small gap
(latency) and then as fast as JetStream acknowledges them (throughput).

Printed: the latency from publish to delivery at each client (p50, p99, ms), the
delivery rate (events/s summed over clients), and the time to replay the run's
history to a client that resumes from sequence 0.

Run: ``python bench/hub.py [--clients 20] [--events 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import orjson
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.events import LogLine  # noqa: E402
from gateway.infrastructure import SHARED_STREAMS, ensure_stream, kept_stream  # noqa: E402
from gateway.messages import EVENTS_STREAM  # noqa: E402
from local.natsd import NatsServer, free_port, wait_for_port  # noqa: E402

RUN_ID = "r-bench"


async def follow(url: str, count: int, arrivals: list[float]) -> None:
    """Receive ``count`` events, noting when each arrived (perf_counter seconds)."""
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.recv()  # hello
        while len(arrivals) < count:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "event":
                arrivals.append(time.perf_counter())


async def publish(js: object, count: int, gap: float) -> list[float]:
    """Publish ``count`` log events of the run; when each was sent (perf_counter seconds)."""
    sent = []
    batch = time.time_ns()  # distinct message ids, or the stream's dedupe drops repeats
    for i in range(count):
        event = LogLine(
            run_id=RUN_ID,
            level="INFO",
            function="bench",
            message=f"line {i}",
            call_id=str(batch),
            line_time=str(i),
        )
        sent.append(time.perf_counter())
        await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.msg_id()})
        if gap:
            await asyncio.sleep(gap)
    return sent


async def phase(address: str, js: object, clients: int, count: int, gap: float) -> None:
    """One measurement: clients follow the run while ``count`` events are published."""
    arrivals: list[list[float]] = [[] for _ in range(clients)]
    url = f"ws://{address}/events?run={RUN_ID}"
    followers = [asyncio.create_task(follow(url, count, a)) for a in arrivals]
    await asyncio.sleep(1.0)  # every client has its consumer
    start = time.perf_counter()
    sent = await publish(js, count, gap)
    await asyncio.gather(*followers)
    elapsed = max(a[-1] for a in arrivals) - start
    latencies = sorted((arrived - sent[i]) * 1000 for a in arrivals for i, arrived in enumerate(a))
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    head = f"{clients:>3} clients, {count} events"
    if gap:
        print(f"{head} {gap * 1000:.0f} ms apart: latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    else:
        rate = clients * count / elapsed
        print(f"{head} back to back: {rate:,.0f} deliveries/s; latency p50 {p50:.0f} ms")


async def replay(address: str, count: int) -> None:
    """Time for a client resuming at sequence 0 to receive the whole history."""
    arrivals: list[float] = []
    start = time.perf_counter()
    await follow(f"ws://{address}/events?run={RUN_ID}&since_seq=0", count, arrivals)
    elapsed = time.perf_counter() - start
    print(f"replay of {count} events from since_seq=0: {elapsed * 1000:.0f} ms")


async def main(clients: int, events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as server:
        port = free_port()
        env = {**os.environ, "MXT_NATS_URL": server.url, "MXT_WEBSOCKET_QUEUE": "100000"}
        hub = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "gateway.hub:create_app"]
            + ["--port", str(port), "--log-level", "warning"],
            env=env,
            cwd=REPO,
        )
        try:
            wait_for_port("127.0.0.1", port, 20)
            address = f"127.0.0.1:{port}"
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            stream = kept_stream(EVENTS_STREAM, SHARED_STREAMS[EVENTS_STREAM], 1, 600)
            await ensure_stream(js, stream)
            await phase(address, js, 1, 200, 0.005)
            await phase(address, js, clients, 200, 0.005)
            await phase(address, js, clients, events, 0.0)
            await replay(address, 200 * 2 + events)
            await nc.close()
        finally:
            hub.terminate()
            hub.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.events))
