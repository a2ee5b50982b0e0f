"""A running stack for chain tests: gateway, provider, queue worker, connector, NATS,
the orchestrator and brick functions, SQLite missiondb, local object store, and the
model CALDB ingested; plus small simulated observations and a client for the runs API.

The stack serves a stack file generated from the repository's ``stack.yml`` with only
the functions chains need (orchestrator*, brick-*: ``local.chainkit.stack_subset``),
so that it starts in seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from astropy.io import fits

from local.chainkit import afterglow_scene, fits_bytes, prepare_data_dir, stack_subset
from local.stack import EmbeddedStack

TERMINAL = ("succeeded", "failed", "cancelled")


def local_store(data_dir: Path) -> Any:
    """The object store the stack's functions use (``MXT_DATA_DIR/objects``)."""
    from storage.local import LocalObjectStore

    store = LocalObjectStore(data_dir / "objects")
    store.ensure_buckets()
    return store


def small_scene(obs_id: str, program: str = "TargetOfOpportunity-Nom", seed: int = 3) -> Any:
    """A GRB afterglow observation of a few thousand events (seconds through the chain)."""
    return afterglow_scene(obs_id, program, seed)


class RunsClient:
    """The runs API of a stack, as an operator's script would use it."""

    def __init__(self, stack: EmbeddedStack) -> None:
        self.stack = stack
        self.url = stack.url
        self.http = httpx.Client(timeout=60)

    def upload_raw(self, l0: fits.HDUList, obs_id: str) -> str:
        """Put an L0 file in the raw bucket; its ``raw/<obs_id>/<file>`` reference."""
        store = local_store(self.stack.data_dir)
        key = f"{obs_id}/{obs_id}_mxt_l0.fits"
        store.put("raw", key, fits_bytes(l0), content_type="application/fits")
        return f"raw/{key}"

    def start(self, raw_ref: str, **fields: Any) -> httpx.Response:
        return self.http.post(
            f"{self.url}/mxt/runs", json={"raw_key": raw_ref, **fields}, auth=self.stack.auth
        )

    def started(self, raw_ref: str, **fields: Any) -> dict[str, Any]:
        """Start a run and return it (201 expected, the answer shown otherwise)."""
        response = self.start(raw_ref, **fields)
        assert response.status_code == 201, response.text
        return response.json()

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/mxt/runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def products(self, run_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/mxt/runs/{run_id}/products")
        response.raise_for_status()
        return response.json()["items"]

    def logs(self, run_id: str, **query: Any) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/mxt/runs/{run_id}/logs", params=query)
        response.raise_for_status()
        return response.json()["items"]

    def wait(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The run once it has ended (polling; a run that never ends fails the test)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout} s: {run}")
            time.sleep(0.1)


def assert_products_once(runs: RunsClient, run_id: str) -> list[dict[str, Any]]:
    """Every product registered once, and exactly those objects under the run's prefix."""
    products = runs.products(run_id)
    names = [p["name"] for p in products]
    assert len(names) == len(set(names)), f"{run_id}: a product was registered twice"
    stored = local_store(runs.stack.data_dir).list("products", f"{run_id}/").items
    assert sorted(o.key for o in stored) == sorted(p["key"] for p in products)
    return products


@pytest.fixture(scope="session")
def observation_factory() -> Any:
    """``make(obs_id, program, seed) -> (l0, truth)``: small simulated observations."""
    from bricks.simulate import simulate

    def make(obs_id: str | None = None, program: str = "TargetOfOpportunity-Nom", seed: int = 3):
        return simulate(small_scene(obs_id or f"t{uuid.uuid4().hex[:10]}", program, seed))

    return make


@pytest.fixture(scope="session")
def chain_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """One stack for the chain tests that do not break it."""
    root = tmp_path_factory.mktemp("chain")
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml")
    stack = EmbeddedStack(stack_file, data_dir, env={"MXT_DATA_DIR": str(data_dir)})
    stack.start(timeout=90)
    yield stack
    stack.stop()


@pytest.fixture()
def runs(chain_stack: EmbeddedStack) -> RunsClient:
    return RunsClient(chain_stack)


#: a fixed alert time, so that notices from the chain and from the reference are equal
ALERT_DATETIME = "2026-02-25T12:30:00"


def reference_digests(l0: fits.HDUList, programme: str) -> dict[str, str]:
    """Content digests of the in-process pipeline's products for ``programme``'s parameters."""
    from bricks.calibration import model_calibrations
    from bricks.pipeline import content_digest, declared_products, run_bricks, serialise_product
    from bricks.registry import get_brick
    from gateway.orchestrator.programme import builtin_programme_files
    from storage.configdb import load_yaml_specs

    spec = next(s for s in load_yaml_specs(builtin_programme_files()) if s.programme == programme)
    bricks = [get_brick(node.brick) for node in spec.dag]
    config = {node.brick: dict(node.params) for node in spec.dag}
    if "notice" in config:
        config["notice"]["alert_datetime"] = ALERT_DATETIME
    products = run_bricks(bricks, {"l0": l0}, model_calibrations(), config)
    declared = declared_products(bricks)
    return {
        name: content_digest(declared[name], serialise_product(declared[name], value))
        for name, value in products.items()
        if name in declared
    }


def stored_digests(stack: EmbeddedStack, products: list[dict[str, Any]]) -> dict[str, str]:
    """Content digests of a run's registered products, read back from the object store."""
    from bricks.pipeline import content_digest, declared_products
    from bricks.registry import all_bricks

    declared = declared_products(all_bricks())
    store = local_store(stack.data_dir)
    return {
        p["name"]: content_digest(declared[p["name"]], store.get(p["bucket"], p["key"]))
        for p in products
    }
