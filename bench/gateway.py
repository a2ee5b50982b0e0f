"""Gateway benchmark: prints figures, asserts nothing.

- sync requests/s to the no-op ``echo`` through the gateway and direct to its process,
  at concurrency 32 (aiohttp load generator, bounded in count and time, loopback only),
  their ratio, and the added latency (p50/p99) measured one request at a time;
- async invocations/s end to end (accepted → executed → callback received), and
  how many were lost;
- idle RSS of the gateway process and of one function process;
- ``mxt up`` time to healthy, and until 40 functions are ready (eager and lazy start).

Run: ``python bench/gateway.py [--requests N] [--async-calls N]``. Targets (issue 2):
≥ 1,000 sync req/s, p50 added ≤ 2 ms, ≥ 300 async/s with none lost, gateway idle
≤ 100 MB, function idle ≤ 80 MB, healthy in ≤ 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from local.natsd import free_port  # noqa: E402
from local.stack import EmbeddedStack, write_stack_file  # noqa: E402

ECHO_BODY = b'{"message": "x"}'
HEADERS = {"Content-Type": "application/json"}


def write_stack(path: Path, names: list[str]) -> Path:
    """A stack file running the ``echo`` handler under each name (public, as in tests)."""
    entry = {
        "lang": "python3-mxt",
        "handler": str(REPO / "tests/functions/echo"),
        "annotations": {"com.mxt.access": "public"},
    }
    return write_stack_file(path, dict.fromkeys(names, entry))


async def load(
    url: str, total: int, concurrency: int, max_seconds: float
) -> tuple[float, int, int]:
    """POST up to ``total`` requests, ``concurrency`` in flight; (requests/s, errors, sent)."""
    done = errors = 0
    deadline = time.monotonic() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def user() -> None:
            nonlocal done, errors
            while done < total and time.monotonic() < deadline:
                done += 1
                async with session.post(url, data=ECHO_BODY, headers=HEADERS) as resp:
                    await resp.read()
                    errors += resp.status != 200

        started = time.monotonic()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        return done / (time.monotonic() - started), errors, done


async def latencies(url: str, count: int) -> list[float]:
    """Latency of ``count`` sequential requests, in milliseconds."""
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.post(url, data=ECHO_BODY, headers=HEADERS) as resp:
                await resp.read()
            out.append((time.perf_counter() - started) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CpuMeter:
    """CPU seconds (user + system) used by processes over a ``with`` block.

    Unlike requests/s, CPU per request barely depends on what else the machine runs.
    """

    def __init__(self, *processes: psutil.Process) -> None:
        self.processes = processes

    def _now(self) -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in self.processes]

    def __enter__(self) -> CpuMeter:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = [b - a for a, b in zip(self.start, self._now(), strict=True)]

    def per(self, count: int) -> list[float]:
        """Microseconds of CPU per item, for each process."""
        return [1e6 * used / count for used in self.used]


def rss_mb(pid: int) -> float:
    """Resident set size in MB."""
    return psutil.Process(pid).memory_info().rss / 1e6


async def async_end_to_end(stack: EmbeddedStack, count: int) -> tuple[float, int]:
    """Submit ``count`` async calls with a callback; (calls/s until the last callback, lost)."""
    received: set[str] = set()
    all_in = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        received.add(request.headers["X-Call-Id"])
        if len(received) >= count:
            all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {**HEADERS, "X-Callback-Url": f"http://127.0.0.1:{port}/cb"}
    accepted: set[str] = set()
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:

        async def submit(i: int) -> None:
            async with session.post(
                stack.url + "/async-function/echo", data=ECHO_BODY, headers=headers
            ) as resp:
                if resp.status == 202:
                    accepted.add(resp.headers["X-Call-Id"])

        for first in range(0, count, 256):
            await asyncio.gather(*(submit(i) for i in range(first, min(count, first + 256))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 120)
    elapsed = time.monotonic() - started
    await runner.cleanup()
    return len(received) / elapsed, len(accepted - received)


def startup(
    root: Path, names: list[str], lazy: bool, stack_file: Path | None = None
) -> tuple[float, float]:
    """Seconds until ``/healthz`` answers and until every function is ready."""
    root.mkdir(parents=True, exist_ok=True)
    stack_file = stack_file or write_stack(root / "stack.yml", names)
    env = {"MXT_LAZY_START": "true"} if lazy else {}
    started = time.monotonic()
    stack = EmbeddedStack(stack_file, root / "data", env=env).start(timeout=120, ready=False)
    try:
        healthy = time.monotonic() - started
        if not lazy:
            stack.wait_functions_ready(120)
        return healthy, time.monotonic() - started
    finally:
        stack.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--async-calls", type=int, default=3_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="cap per load run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the async benchmark's callback receiver listens on loopback, refused unless listed
        stack = EmbeddedStack(
            write_stack(root / "stack.yml", ["echo"]),
            root / "data",
            env={"MXT_CALLBACK_ALLOW": "127.0.0.1"},
        ).start()
        try:
            gateway_url, direct_url = stack.url + "/function/echo", stack.replica_urls("echo")[0]
            await asyncio.sleep(1.0)
            gateway_rss = rss_mb(stack.process.pid)
            (function_pid,) = stack.replica_pids("echo")
            function_rss = rss_mb(function_pid)
            gateway, function = psutil.Process(stack.process.pid), psutil.Process(function_pid)
            await load(gateway_url, 2000, 32, 5)  # warm up both paths
            await load(direct_url, 2000, 32, 5)
            with CpuMeter(gateway, function) as via_cpu:
                via, via_errors, via_count = await load(
                    gateway_url, args.requests, 32, args.seconds
                )
            with CpuMeter(gateway, function) as direct_cpu:
                direct, direct_errors, direct_count = await load(
                    direct_url, args.requests, 32, args.seconds
                )
            lat_via = await latencies(gateway_url, 2000)
            lat_direct = await latencies(direct_url, 2000)
            with CpuMeter(gateway, function) as async_cpu:
                async_rate, lost = await async_end_to_end(stack, args.async_calls)
        finally:
            stack.stop()
        eager = startup(root / "eager", [f"fn-{i}" for i in range(40)], lazy=False)
        lazy = startup(root / "lazy", [f"fn-{i}" for i in range(40)], lazy=True)
        one = startup(root / "one", ["echo"], lazy=False)
        repository = startup(root / "repo", [], lazy=False, stack_file=REPO / "stack.yml")

    p50 = percentile(lat_via, 0.5) - percentile(lat_direct, 0.5)
    p99 = percentile(lat_via, 0.99) - percentile(lat_direct, 0.99)
    print(f"sync via gateway, c=32     {via:8.0f} req/s  ({via_errors} errors)")
    print(f"sync direct, c=32          {direct:8.0f} req/s  ({direct_errors} errors)")
    print(f"ratio gateway/direct       {via / direct:8.2f}")
    print(
        f"latency c=1 p50 / p99      via {percentile(lat_via, 0.5):.2f} / "
        f"{percentile(lat_via, 0.99):.2f} ms, direct {percentile(lat_direct, 0.5):.2f} / "
        f"{percentile(lat_direct, 0.99):.2f} ms (mean via {statistics.mean(lat_via):.2f} ms)"
    )
    print(f"added latency p50 / p99    {p50:8.2f} / {p99:.2f} ms")
    print(f"async end to end           {async_rate:8.0f} calls/s  ({lost} lost)")
    via_gateway, via_function = via_cpu.per(via_count)
    direct_gateway, direct_function = direct_cpu.per(direct_count)
    print(
        f"CPU per sync call          gateway {via_gateway:.0f} us, function {via_function:.0f} us"
    )
    print(
        f"CPU per direct call        gateway {direct_gateway:.0f} us (capturing the function's "
        f"log line), function {direct_function:.0f} us"
    )
    async_gateway, async_function = async_cpu.per(args.async_calls)
    print(
        f"CPU per async call         stack {async_gateway:.0f} us, function {async_function:.0f} us"
    )
    print(
        f"machine load average       {psutil.getloadavg()[0]:8.1f} (2 cores: > 2 slows all rates)"
    )
    print(f"idle RSS gateway           {gateway_rss:8.1f} MB (gateway + worker + connector)")
    print(f"idle RSS function          {function_rss:8.1f} MB")
    print(f"mxt up, 1 function         healthy {one[0]:.2f} s, ready {one[1]:.2f} s")
    print(f"mxt up, 40 functions eager healthy {eager[0]:.2f} s, all ready {eager[1]:.2f} s")
    print(
        f"mxt up, repo stack.yml     healthy {repository[0]:.2f} s, all ready {repository[1]:.2f} s"
    )
    print(f"mxt up, 40 functions lazy  healthy {lazy[0]:.2f} s (start on first call)")


if __name__ == "__main__":
    asyncio.run(main())
