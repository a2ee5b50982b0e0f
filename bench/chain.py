"""Chain benchmark: prints figures, asserts nothing.

- per-hop overhead of the chain: the ToO programme with every brick a no-op function
  (``bench/noop_brick``), so that the time between one brick's dispatch and the next
  one's is the orchestration alone (queue worker, brick call, completion event,
  connector calling orchestrator-advance directly, its database work, the next brick
  queued);
- ToO latency, warm stack: from the L0 file's upload to the raw bucket (its arrival
  event starts the run) to the position notice received on ``mxt.alerts.notice``, for
  about 10⁵ and 10⁶ events;
- ToO notice latency idle and under a flood (issue 11): the same for a small ToO
  observation, idle, then while ``--flood`` slow anonymous async calls (the ``sleep``
  test function, 4 s each) fill the async queue; target: within 3 s of idle;
- observations per minute through the full CP chain, observations submitted at once.

Run: ``python bench/chain.py [--hops-runs N] [--cp-observations N] [--sizes 1e5 1e6]
[--flood N] [--only hops|too|flood|cp]``.
Targets (issue 5): hop ≤ 15 ms; ToO notice ≤ 5 s after upload for 10⁵ events.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson

HERE = Path(__file__).resolve().parent
# run as a script, this folder comes first on sys.path and bench/gateway.py would shadow
# the gateway package
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path[0] = str(HERE.parent)

from gateway.events import ALERT_SUBJECT  # noqa: E402
from local.chainkit import (  # noqa: E402
    afterglow_scene,
    fits_bytes,
    prepare_data_dir,
    stack_subset,
)
from local.stack import EmbeddedStack  # noqa: E402


def start_stack(
    root: Path,
    replace: dict[str, Path] | None = None,
    extra: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> EmbeddedStack:
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml", extra=extra, replace_handler=replace)
    env = {"MXT_DATA_DIR": str(data_dir), **(env or {})}
    stack = EmbeddedStack(stack_file, data_dir, env=env)
    return stack.start(timeout=120)


def store_of(stack: EmbeddedStack) -> Any:
    from storage.local import LocalObjectStore

    return LocalObjectStore(stack.data_dir / "objects")


def simulate_bytes(obs_id: str, events: float, program: str, seed: int) -> tuple[bytes, int]:
    """An afterglow observation of about ``events`` events (flux scaled once to get there)."""
    from bricks.simulate import simulate

    flux = 2e-10 * max(1.0, events / 1.2e3)  # about 1.2e3 events per 2e-10 erg/cm²/s
    l0, truth = simulate(afterglow_scene(obs_id, program, seed, duration=2000.0, flux=flux))
    if events > 2e4 and abs(truth["n_events"] / events - 1.0) > 0.2:
        flux *= events / truth["n_events"]
        l0, truth = simulate(afterglow_scene(obs_id, program, seed, duration=2000.0, flux=flux))
    return fits_bytes(l0), int(truth["n_events"])


def start_run(client: httpx.Client, stack: EmbeddedStack, raw: str) -> str:
    response = client.post(f"{stack.url}/mxt/runs", json={"raw_key": raw}, auth=stack.auth)
    response.raise_for_status()
    return response.json()["run_id"]


def wait_run(client: httpx.Client, stack: EmbeddedStack, run_id: str) -> dict[str, Any]:
    while True:
        run = client.get(f"{stack.url}/mxt/runs/{run_id}").json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.05)


def warm_up(stack: EmbeddedStack, client: httpx.Client, program: str) -> None:
    """One run first, so that every function has served a call (imports, caches, pools)."""
    data, _ = simulate_bytes("warmup", 1e4, program, 2)
    raw, _ = upload(stack, "warmup", data)
    wait_run(client, stack, start_run(client, stack, raw))


def upload(stack: EmbeddedStack, obs_id: str, data: bytes) -> tuple[str, Any]:
    key = f"{obs_id}/{obs_id}_mxt_l0.fits"
    info = store_of(stack).put("raw", key, data, content_type="application/fits")
    return f"raw/{key}", info


# ---------------------------------------------------------------------- hops


class RunEnds:
    """The ends of runs, heard on ``mxt.events.run.>`` by a thread of its own.

    Waiting on the event rather than polling ``GET /mxt/runs/{id}`` keeps the bench from
    loading the two cores it measures (each poll costs the gateway and the runs
    function a database read while the chain runs).
    """

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.ended: dict[str, str] = {}
        self.condition = threading.Condition()
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True).start()
        self.ready.wait(30)

    async def _listen(self) -> None:
        async def quiet(_error: Exception) -> None:
            """The stack stops before this listener: its connection errors are expected."""

        nc = await nats.connect(
            self.nats_url, allow_reconnect=False, error_cb=quiet, closed_cb=None
        )
        sub = await nc.subscribe("mxt.events.run.>")
        await nc.flush()
        self.ready.set()
        async for msg in sub.messages:
            event = orjson.loads(msg.data)
            if event.get("state") in ("succeeded", "failed", "cancelled"):
                with self.condition:
                    self.ended[event["run_id"]] = event["state"]
                    self.condition.notify_all()

    def wait(self, run_id: str, timeout: float = 120.0) -> str:
        """The final state of ``run_id``, once its end is published."""
        with self.condition:
            if not self.condition.wait_for(lambda: run_id in self.ended, timeout):
                raise TimeoutError(f"run {run_id} did not end within {timeout} s")
            return self.ended[run_id]


def hop_overhead(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), replace={"brick-": HERE / "noop_brick"})
        try:
            client = httpx.Client(timeout=60)
            ends = RunEnds(stack.nats_url)
            data, _ = simulate_bytes("hopobs", 1e3, "TargetOfOpportunity-Nom", 1)
            gaps: list[float] = []
            walls: list[float] = []
            for i in range(runs + 1):
                raw, _ = upload(stack, "hopobs", data)
                started = time.perf_counter()
                run_id = start_run(client, stack, raw)
                ends.wait(run_id)
                wall = time.perf_counter() - started
                run = client.get(f"{stack.url}/mxt/runs/{run_id}").json()
                if i == 0:
                    continue  # warm-up
                walls.append(wall)
                gaps += chain_gaps(run)
            print("per-hop overhead (no-op bricks, ToO DAG, dispatch → next dispatch)")
            print(f"  hops measured     {len(gaps)} over {runs} runs")
            print(f"  median            {statistics.median(gaps) * 1e3:8.1f} ms   (target ≤ 15 ms)")
            print(f"  p90               {percentile(gaps, 0.9) * 1e3:8.1f} ms")
            print(f"  whole no-op run   {statistics.median(walls):8.3f} s (median, 10 bricks)")
            advance = call_durations(stack, "orchestrator-advance")
            brick = call_durations(stack, "brick-detect")
            print(
                f"  of a hop: orchestrator-advance call {statistics.median(advance) * 1e3:6.1f} ms"
            )
            print(f"            no-op brick call          {statistics.median(brick) * 1e3:6.1f} ms")
        finally:
            stack.stop()


def call_durations(stack: EmbeddedStack, function: str) -> list[float]:
    """Seconds each call of ``function`` took inside its process (its ``call finished`` lines)."""
    import json

    durations = []
    for line in (stack.data_dir / "logs" / f"{function}.log").read_text().splitlines():
        record = line.partition(" ")[2]
        if '"call finished"' in record:
            durations.append(float(json.loads(record)["duration_seconds"]))
    return durations or [float("nan")]


def chain_gaps(run: dict[str, Any]) -> list[float]:
    """Seconds from each brick's dispatch to the dispatch of a brick that needs it."""
    started = {t["brick"]: datetime.fromisoformat(t["started_at"]) for t in run["tasks"]}
    gaps = []
    for task in run["tasks"]:
        if task["needs"]:
            last = max(started[n] for n in task["needs"])
            gaps.append((started[task["brick"]] - last).total_seconds())
    return gaps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -------------------------------------------------------------- ToO latency


def too_latency(sizes: list[float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            client = httpx.Client(timeout=60)
            warm_up(stack, client, "TargetOfOpportunity-Nom")
            print("ToO latency, warm stack: raw upload → notice on mxt.alerts.notice")
            for size in sizes:
                obs_id = f"too{int(size)}"
                data, events = simulate_bytes(obs_id, size, "TargetOfOpportunity-Nom", 3)

                upload_s, notice_s = asyncio.run(notice_latency(stack, obs_id, data))
                print(
                    f"  {events:>9,d} events ({len(data) / 1e6:6.1f} MB): notice {notice_s:6.2f} s "
                    f"after upload start (upload itself {upload_s:5.2f} s)   (target ≤ 5 s at 10⁵)"
                )
        finally:
            stack.stop()


async def notice_latency(stack: EmbeddedStack, obs_id: str, data: bytes) -> tuple[float, float]:
    """Seconds to upload, and from the upload's start to the notice on NATS."""
    from storage.events import publish_object_created

    nc = await nats.connect(stack.nats_url)
    got = asyncio.get_running_loop().create_future()

    async def on_notice(msg: Any) -> None:
        if not got.done():
            got.set_result(time.perf_counter())

    await nc.subscribe(ALERT_SUBJECT, cb=on_notice)
    t0 = time.perf_counter()
    _, info = upload(stack, obs_id, data)
    t1 = time.perf_counter()
    await publish_object_created(stack.nats_url, info)
    notice_at = await asyncio.wait_for(got, 300)
    await nc.drain()
    return t1 - t0, notice_at - t0


# ---------------------------------------------------- ToO under an async flood


def too_under_flood(count: int, seconds: float = 4.0) -> None:
    """The ToO notice latency idle, then with ``count`` slow async calls queued."""
    sleep = {
        "lang": "python3-mxt",
        "handler": str(HERE.parent / "tests" / "functions" / "sleep"),
        "annotations": {"com.mxt.access": "public"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        # the flood is one anonymous caller: a burst big enough not to be rate-limited
        env = {"MXT_ASYNC_BURST": str(count + 10)}
        stack = start_stack(Path(tmp), extra={"sleep": sleep}, env=env)
        try:
            client = httpx.Client(timeout=60)
            warm_up(stack, client, "TargetOfOpportunity-Nom")
            data, _ = simulate_bytes("tooidle", 1e4, "TargetOfOpportunity-Nom", 3)
            _, idle = asyncio.run(notice_latency(stack, "tooidle", data))

            def one(_: int) -> int:
                url = f"{stack.url}/async-function/sleep"
                return client.post(url, json={"seconds": seconds}).status_code

            with ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(one, range(count)))
            data, _ = simulate_bytes("tooflood", 1e4, "TargetOfOpportunity-Nom", 3)
            _, flooded = asyncio.run(notice_latency(stack, "tooflood", data))
            accepted = statuses.count(202)
            print(f"ToO notice latency under an async flood ({count} calls of {seconds:g} s)")
            print(f"  idle               {idle:6.2f} s")
            print(f"  under the flood    {flooded:6.2f} s   ({accepted} calls accepted; "
                  f"target ≤ idle + 3 s)")  # fmt: skip
        finally:
            stack.stop()


# ------------------------------------------------------------ CP throughput


def cp_throughput(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            client = httpx.Client(timeout=60)
            warm_up(stack, client, "CoreProgram")
            files = [simulate_bytes(f"cp{i:03d}", 1e4, "CoreProgram", 10 + i) for i in range(count)]
            refs = [upload(stack, f"cp{i:03d}", data)[0] for i, (data, _) in enumerate(files)]
            started = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                run_ids = list(pool.map(lambda r: start_run(client, stack, r), refs))
                finals = list(pool.map(lambda r: wait_run(client, stack, r), run_ids))
            wall = time.perf_counter() - started
            ok = sum(run["state"] == "succeeded" for run in finals)
            events = statistics.mean(e for _, e in files)
            print(f"CP throughput: {count} observations (~{events:,.0f} events each) at once")
            rate = 60 * ok / wall
            print(f"  {ok}/{count} succeeded in {wall:.1f} s: {rate:.1f} observations/minute")
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops-runs", type=int, default=10)
    parser.add_argument("--cp-observations", type=int, default=10)
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6])
    parser.add_argument("--flood", type=int, default=300)
    parser.add_argument("--only", choices=["hops", "too", "flood", "cp"], default=None)
    args = parser.parse_args()
    if args.only in (None, "hops"):
        hop_overhead(args.hops_runs)
    if args.only in (None, "too"):
        too_latency(args.sizes)
    if args.only in (None, "flood"):
        too_under_flood(args.flood)
    if args.only in (None, "cp"):
        cp_throughput(args.cp_observations)


if __name__ == "__main__":
    main()
