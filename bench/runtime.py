"""Benchmark of one function process: start time, idle memory, direct requests/s.

Starts ``python -m gateway.runtime`` on the echo function, as the local provider
does, and prints:

- time from process start to the first healthy ``GET /_/health``, in seconds;
- resident memory (RSS) of the idle process, in MB;
- requests/s and latency percentiles of ``POST /`` at a given concurrency, and the
  function process's CPU time per request (the load generator shares the machine's
  cores, so requests/s understates what the process alone sustains).

Usage: ``python bench/runtime.py [--concurrency 32] [--seconds 10] [--function echo]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

from local.natsd import free_port

REPOSITORY = Path(__file__).resolve().parents[1]


def start_function(function: str, port: int) -> tuple[subprocess.Popen, float]:
    """Start the function process; return it and its start-to-healthy time in seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.runtime", "--handler", f"functions/{function}"]
        + ["--name", function, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPOSITORY,
        env={**os.environ, "MXT_LOG_LEVEL": os.environ.get("MXT_LOG_LEVEL", "INFO")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import urllib.request

    while True:
        if process.poll() is not None:
            raise SystemExit(f"function process exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_/health", timeout=1):
                return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.01)


async def load(url: str, body: bytes, concurrency: int, seconds: float) -> list[float]:
    """POST ``body`` from ``concurrency`` loops for ``seconds``; the latencies in seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"unexpected status {response.status}")
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--function", default="echo")
    arguments = parser.parse_args()

    port = free_port()
    process, startup = start_function(arguments.function, port)
    try:
        time.sleep(1.0)  # let start-up allocations settle before measuring idle memory
        idle_rss = psutil.Process(process.pid).memory_info().rss / 1e6
        url = f"http://127.0.0.1:{port}/"
        body = b'{"message": "benchmark", "data": {"n": 1}}'
        asyncio.run(load(url, body, arguments.concurrency, 1.0))  # warm-up
        server = psutil.Process(process.pid)
        cpu_before = sum(server.cpu_times()[:2])
        latencies = asyncio.run(load(url, body, arguments.concurrency, arguments.seconds))
        cpu_per_request = (sum(server.cpu_times()[:2]) - cpu_before) / len(latencies)
        loaded_rss = server.memory_info().rss / 1e6
    finally:
        process.terminate()
        process.wait(30)

    quantiles = statistics.quantiles(latencies, n=100)
    print(f"function                      {arguments.function}")
    print(f"start to healthy              {startup:.2f} s")
    print(f"idle RSS                      {idle_rss:.1f} MB")
    print(f"RSS after load                {loaded_rss:.1f} MB")
    print(f"concurrency                   {arguments.concurrency}")
    print(f"requests                      {len(latencies)} in {arguments.seconds:g} s")
    print(f"direct requests/s             {len(latencies) / arguments.seconds:.0f}")
    print(f"function CPU per request      {cpu_per_request * 1e6:.0f} µs")
    print(f"latency p50 / p99             {quantiles[49] * 1e3:.2f} / {quantiles[98] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
