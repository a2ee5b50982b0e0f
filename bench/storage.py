"""Storage benchmark: object-store throughput and database operation latency.

Prints figures, asserts nothing. Run from the repository root::

    python bench/storage.py [--size-mb 64] [--n 300] [--no-gateway] [--no-postgres]

- object put/get throughput (MB/s) on the local backend and on a real S3 protocol
  server (moto_server started here, or ``MXT_TEST_S3_ENDPOINT``);
- database operation latency (p50/p99, ms) called directly on SQLite and PostgreSQL;
- the same operations through the gateway (an ``EmbeddedStack`` serving the storage
  functions), on each database.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from local.testservers import moto_s3_endpoint  # noqa: E402
from storage.local import LocalObjectStore  # noqa: E402
from storage.objects import ObjectStore  # noqa: E402
from storage.s3 import S3ObjectStore  # noqa: E402

MB = 1024 * 1024


# -- helpers --------------------------------------------------------------------------
def percentiles(samples: list[float]) -> str:
    """``p50 / p99`` of durations in seconds, printed in ms."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered) * 1e3:7.2f} ms   p99 {p99 * 1e3:7.2f} ms"


def timed(operation: Callable[[int], object], n: int) -> list[float]:
    """Durations of ``operation(i)`` for i in range(n), in seconds."""
    samples = []
    for i in range(n):
        started = time.perf_counter()
        operation(i)
        samples.append(time.perf_counter() - started)
    return samples


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the PostgreSQL test database, dropped afterwards."""
    from tests.conftest import _postgres_schema_url

    yield from _postgres_schema_url()


# -- objects --------------------------------------------------------------------------
def bench_objects(name: str, store: ObjectStore, size_mb: int, repeat: int = 3) -> None:
    """Put and streamed get of a ``size_mb`` object, and of 200 small ones."""
    store.ensure_buckets()
    payload = os.urandom(size_mb * MB)
    puts, gets = [], []
    for i in range(repeat):
        started = time.perf_counter()
        store.put("products", f"bench/big-{i}.bin", io.BytesIO(payload))
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in store.stream("products", f"bench/big-{i}.bin"):
            pass
        gets.append(time.perf_counter() - started)
    small = os.urandom(100 * 1024)
    small_puts = timed(lambda i: store.put("products", f"bench/small/{i}", small), 200)
    small_gets = timed(lambda i: store.get("products", f"bench/small/{i}"), 200)
    print(
        f"  {name:6s} {size_mb} MB object: put {size_mb / statistics.median(puts):7.1f} MB/s"
        f"   get {size_mb / statistics.median(gets):7.1f} MB/s"
    )
    print(f"  {name:6s} 100 KB put: {percentiles(small_puts)}")
    print(f"  {name:6s} 100 KB get: {percentiles(small_gets)}")


# -- databases ------------------------------------------------------------------------
def bench_database_direct(label: str, url: str, n: int) -> None:
    """Latency of typical operations, each in its own transaction."""
    from storage import caldb, missiondb
    from storage.db.engine import make_engine, transaction, upgrade_to_head
    from tests.storage.caldb_files import caldb_file

    upgrade_to_head(url)
    engine = make_engine(url)
    store = LocalObjectStore(tempfile.mkdtemp(prefix="mxt-bench-"))
    store.ensure_buckets()
    with transaction(engine) as s:
        caldb.ingest(s, store, caldb_file(), caldb.IngestOptions(filename="gain.fits"))

    def register(i: int) -> None:
        spec = missiondb.ObservationSpec(obs_id=f"obs-{i}", raw_key=f"obs-{i}/l0.fits")
        with transaction(engine) as s:
            missiondb.register_observation(s, spec)
            missiondb.create_run(
                s,
                missiondb.RunSpec(
                    run_id=f"run-{i}", obs_id=f"obs-{i}", programme="ToO", bricks=["ingest"]
                ),
            )

    def get(i: int) -> None:
        with transaction(engine) as s:
            missiondb.get_observation(s, f"obs-{i}")

    def transition(i: int) -> None:
        with transaction(engine) as s:
            missiondb.transition_task(s, f"run-{i}.ingest", ["pending"], "dispatched")

    def query(i: int) -> None:
        request = missiondb.QueryRequest(entity="runs", filters={"state": "pending"}, limit=50)
        with transaction(engine) as s:
            missiondb.query(s, request)

    def caldb_query(i: int) -> None:
        with transaction(engine) as s:
            caldb.best_dataset(s, caldb.CaldbQuery(codename="GAIN", boundaries=["TEMP(-65)C"]))

    for name, operation in [
        ("register observation + run", register),
        ("get observation", get),
        ("task compare-and-set", transition),
        ("query runs (50)", query),
        ("caldb query", caldb_query),
    ]:
        print(f"  {label:10s} direct   {name:28s} {percentiles(timed(operation, n))}")
    engine.dispose()


def bench_database_gateway(label: str, url: str, n: int) -> None:
    """The same operations as HTTP calls through the gateway of an embedded stack."""
    import httpx

    from local.stack import EmbeddedStack
    from tests.storage.caldb_files import caldb_file
    from tests.storage.stack_files import write_storage_stack

    functions = [
        "missiondb-register-observation",
        "missiondb-get-observation",
        "missiondb-query",
        "caldb-ingest",
        "caldb-query",
    ]
    work = Path(tempfile.mkdtemp(prefix="mxt-bench-stack-"))
    stack_file = write_storage_stack(work / "stack.yml", functions)
    env = {"MXT_DATABASE_URL": url, "MXT_OBJECT_STORE": "local"}
    stack = EmbeddedStack(stack_file, work / "data", env=env).start(timeout=120)
    with stack, httpx.Client(base_url=stack.url, auth=stack.auth, timeout=30) as http:
        response = http.post(
            "/function/caldb-ingest",
            content=caldb_file(),
            params={"filename": "gain.fits"},
        )
        response.raise_for_status()

        def register(i: int) -> None:
            http.post(
                "/mxt_missiondb/observations",
                json={"obs_id": f"gw-{i}", "raw_key": f"gw-{i}/l0.fits"},
            ).raise_for_status()

        def get(i: int) -> None:
            http.get(f"/mxt_missiondb/observations/gw-{i}").raise_for_status()

        def query(i: int) -> None:
            http.get("/mxt_missiondb/observations", params={"limit": 50}).raise_for_status()

        def caldb_query(i: int) -> None:
            http.get(
                "/caldb/query", params={"codename": "GAIN", "boundaries": "TEMP(-65)C"}
            ).raise_for_status()

        for name, operation in [
            ("register observation", register),
            ("get observation", get),
            ("query observations (50)", query),
            ("caldb query", caldb_query),
        ]:
            samples = timed(operation, n)
            print(f"  {label:10s} gateway  {name:28s} {percentiles(samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="large object size, MB")
    parser.add_argument("--n", type=int, default=300, help="calls per database operation")
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway figures")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    os.chdir(REPOSITORY)
    print(f"object store ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="mxt-bench-") as root:
        bench_objects("local", LocalObjectStore(root), args.size_mb)
    with moto_s3_endpoint() as endpoint:
        store = S3ObjectStore(endpoint, "testing", "testing", bucket_prefix="bench-")
        bench_objects("s3", store, args.size_mb)
    print("databases")
    with tempfile.TemporaryDirectory(prefix="mxt-bench-") as root:
        targets: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [
            ("sqlite", lambda: contextlib.nullcontext(f"sqlite:///{root}/bench.db")),
        ]
        if not args.no_postgres:
            targets.append(("postgresql", postgres_schema))
        for label, make_url in targets:
            with make_url() as url:
                bench_database_direct(label, url, args.n)
        for label, make_url in targets if not args.no_gateway else []:
            with make_url() as url:
                if label == "sqlite":
                    url = f"sqlite:///{root}/gateway.db"
                bench_database_gateway(label, url, args.n)


if __name__ == "__main__":
    main()
