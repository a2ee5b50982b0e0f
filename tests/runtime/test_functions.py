"""The platform's test functions (echo, sleep, fail-n-times) through their ASGI apps."""

from __future__ import annotations

import asyncio

from gateway.runtime.limits import RuntimeLimits
from tests.runtime.conftest import FUNCTIONS, asgi_client


async def test_echo_returns_its_input():
    async with asgi_client(FUNCTIONS / "echo", name="echo") as client:
        response = await client.post("/x", json={"message": "ping", "data": {"n": [1, 2]}})
        refused = await client.post("/", json={"message": "ping", "extra": 1})
    assert response.json() == {"message": "ping", "data": {"n": [1, 2]}, "path": "/x"}
    assert refused.status_code == 422


async def test_sleep_sleeps_and_calls_overlap():
    async with asgi_client(FUNCTIONS / "sleep", name="sleep") as client:
        responses = await asyncio.gather(
            *(client.post("/", json={"seconds": 0.3}) for _ in range(5))
        )
        too_long = await client.post("/", json={"seconds": 61})
    assert [r.json() for r in responses] == [{"slept_seconds": 0.3}] * 5
    assert too_long.status_code == 422
    assert too_long.json()["detail"]["errors"][0]["loc"] == "seconds"


async def test_sleep_beyond_the_call_timeout_is_504():
    limits = RuntimeLimits(call_timeout_seconds=0.1)
    async with asgi_client(FUNCTIONS / "sleep", name="sleep", limits=limits) as client:
        response = await client.post("/", json={"seconds": 5})
    assert response.status_code == 504


async def test_fail_n_times_fails_then_succeeds_per_key(tmp_path):
    request = {"key": "job-1", "failures": 2, "state_dir": str(tmp_path), "retry_after_seconds": 1}
    async with asgi_client(FUNCTIONS / "fail-n-times", name="fail-n-times") as client:
        statuses = [(await client.post("/", json=request)).status_code for _ in range(2)]
        success = await client.post("/", json=request)
        other_key = await client.post("/", json={**request, "key": "job-2"})
    assert statuses == [503, 503]
    assert success.status_code == 200
    assert success.json() == {"key": "job-1", "attempts": 3}
    assert other_key.status_code == 503
    assert other_key.headers["retry-after"] == "1"
    assert other_key.json()["detail"] == {"attempts": 1}
    assert (tmp_path / "job-1.attempts").read_text() == "3"


async def test_fail_n_times_counts_under_the_data_dir_and_refuses_path_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("MXT_DATA_DIR", str(tmp_path))
    async with asgi_client(FUNCTIONS / "fail-n-times", name="fail-n-times") as client:
        first = await client.post("/", json={"key": "k", "failures": 0})
        hostile = await client.post("/", json={"key": "../../etc/passwd", "failures": 0})
    assert first.json()["attempts"] == 1
    assert (tmp_path / "fail-n-times" / "k.attempts").read_text() == "1"
    assert hostile.status_code == 422
    assert hostile.json()["detail"]["errors"][0]["loc"] == "key"
