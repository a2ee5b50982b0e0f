"""Error taxonomy, unexpected exceptions, size limit and timeout through the ASGI app."""

from __future__ import annotations

import json

import pytest

from gateway.runtime.limits import RuntimeLimits
from tests.runtime.conftest import asgi_client

RAISER = """
from pydantic import BaseModel
from bricks import errors

class Failure(BaseModel):
    kind: str
    retry_after: float | None = None

def handle(request: Failure):
    error_class = getattr(errors, request.kind, None)
    if error_class is None:
        raise RuntimeError("secret internal state 0xdeadbeef")
    if request.kind == "Transient":
        raise error_class("database unreachable", retry_after=request.retry_after, table="runs")
    raise error_class(f"{request.kind} raised on purpose", field="kind")
"""


@pytest.mark.parametrize(
    ("error_class", "status", "kind"),
    [
        ("BadInput", 400, "bad_input"),
        ("NotFound", 404, "bad_input"),
        ("Conflict", 409, "bad_input"),
        ("PayloadTooLarge", 413, "bad_input"),
        ("Unprocessable", 422, "unprocessable"),
        ("NoWork", 200, "no_work"),
    ],
)
async def test_error_class_maps_to_its_status(write_handler, error_class, status, kind):
    async with asgi_client(write_handler("raiser", RAISER)) as client:
        response = await client.post("/", json={"kind": error_class}, headers={"X-Call-Id": "e1"})
    assert response.status_code == status
    assert response.json() == {
        "kind": kind,
        "reason": f"{error_class} raised on purpose",
        "detail": {"field": "kind"},
        "call_id": "e1",
    }


async def test_transient_is_503_with_retry_after(write_handler):
    async with asgi_client(write_handler("raiser", RAISER)) as client:
        response = await client.post("/", json={"kind": "Transient", "retry_after": 2.5})
        without = await client.post("/", json={"kind": "Transient"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json()["kind"] == "transient"
    assert response.json()["detail"] == {"table": "runs"}
    assert without.status_code == 503 and "retry-after" not in without.headers


async def test_unexpected_exception_is_500_logged_not_leaked(write_handler, json_log_lines):
    async with asgi_client(write_handler("raiser", RAISER)) as client:
        response = await client.post("/", json={"kind": "Bug"}, headers={"X-Call-Id": "boom-1"})
    assert response.status_code == 500
    assert response.json()["call_id"] == "boom-1"
    assert "deadbeef" not in response.text and "Traceback" not in response.text
    logged = [json.loads(line) for line in json_log_lines()]
    failure = [line for line in logged if "traceback" in line]
    assert len(failure) == 1
    assert failure[0]["call_id"] == "boom-1"
    assert failure[0]["level"] == "error"
    assert "RuntimeError: secret internal state 0xdeadbeef" in failure[0]["traceback"]


MARKER = """
from pathlib import Path
def handle(request: bytes, context):
    Path(context.headers["x-marker"]).write_text("handler ran")
    return b"ok"
"""


async def test_oversized_content_length_is_413_before_the_handler(write_handler, tmp_path):
    marker = tmp_path / "ran"
    limits = RuntimeLimits(max_body_bytes=1000)
    async with asgi_client(write_handler("marker", MARKER), limits=limits) as client:
        response = await client.post("/", content=b"x" * 1001, headers={"x-marker": str(marker)})
        fits = await client.post("/", content=b"x" * 1000, headers={"x-marker": str(marker)})
    assert response.status_code == 413
    assert response.json()["kind"] == "bad_input"
    assert response.json()["detail"] == {"limit_bytes": 1000}
    assert "1001 bytes exceeds the limit of 1000 bytes" in response.json()["reason"]
    assert fits.status_code == 200 and marker.read_text() == "handler ran"


async def test_oversized_chunked_body_is_413_before_the_handler(write_handler, tmp_path):
    marker = tmp_path / "ran"

    async def chunks():
        for _ in range(10):
            yield b"y" * 300

    limits = RuntimeLimits(max_body_bytes=1000)
    async with asgi_client(write_handler("marker", MARKER), limits=limits) as client:
        response = await client.post("/", content=chunks(), headers={"x-marker": str(marker)})
    assert response.status_code == 413
    # no Content-Length: refused while counting the chunks
    assert response.json()["reason"] == (
        "request body exceeds the limit of 1000 bytes (MXT_MAX_BODY_BYTES)"
    )
    assert response.json()["detail"] == {"limit_bytes": 1000}
    assert not marker.exists()


async def test_non_integer_content_length_is_400(write_handler, tmp_path):
    async with asgi_client(write_handler("marker", MARKER)) as client:
        response = await client.post(
            "/", content=b"abc", headers={"content-length": "three", "x-marker": "unused"}
        )
    assert response.status_code == 400
    assert "Content-Length" in response.json()["reason"]


SLOW = """
import asyncio, time
async def handle(request: bytes, context):
    await asyncio.sleep(float(request))
    return b"done"
"""

SLOW_SYNC = """
import time
def handle(request: bytes):
    time.sleep(float(request))
    return b"done"
"""

OWN_TIMEOUT = """
def handle(request: bytes):
    raise TimeoutError("the handler's own socket timeout")
"""


@pytest.mark.parametrize("source", [SLOW, SLOW_SYNC], ids=["async", "sync"])
async def test_call_over_the_timeout_is_504_transient(write_handler, source):
    limits = RuntimeLimits(call_timeout_seconds=0.2)
    async with asgi_client(write_handler("slow", source), limits=limits) as client:
        response = await client.post("/", content=b"1.5", headers={"X-Call-Id": "slow-1"})
        quick = await client.post("/", content=b"0")
    assert response.status_code == 504
    assert response.json() == {
        "kind": "transient",
        "reason": "timed out after 0.2 s",
        "call_id": "slow-1",
    }
    assert quick.status_code == 200 and quick.content == b"done"


async def test_handler_timeout_error_is_not_mistaken_for_the_call_timeout(write_handler):
    async with asgi_client(write_handler("own", OWN_TIMEOUT)) as client:
        response = await client.post("/", content=b"")
    assert response.status_code == 500


def test_limits_from_environment(monkeypatch):
    monkeypatch.setenv("MXT_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("MXT_CALL_TIMEOUT_SECONDS", "1.5")
    assert RuntimeLimits.from_env() == RuntimeLimits(2048, 1.5)
    monkeypatch.setenv("MXT_CALL_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ValueError, match="MXT_CALL_TIMEOUT_SECONDS='soon' is not a number"):
        RuntimeLimits.from_env()
    monkeypatch.setenv("MXT_CALL_TIMEOUT_SECONDS", "-1")
    with pytest.raises(ValueError, match="must be positive"):
        RuntimeLimits.from_env()
