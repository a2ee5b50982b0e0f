"""Durable async invocation on JetStream: status, callbacks, retries, dead letters, dedupe,
completion events and the loss of a function process under load."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import httpx
import nats
import psutil
from aiohttp import web

from gateway.messages import CallCompleted
from local.natsd import free_port
from local.stack import EmbeddedStack
from tests.gateway.conftest import wait_call, wait_for


class CallbackReceiver:
    """A small aiohttp server recording the callbacks it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cb"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=204)

    async def __aenter__(self) -> CallbackReceiver:
        app = web.Application()
        app.router.add_post("/cb", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def wait(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_async_call_with_callback_and_completion_event(stack: EmbeddedStack) -> None:
    nc = await nats.connect(stack.nats_url)
    completions = await nc.subscribe("mxt.calls.completed.echo")
    try:
        async with CallbackReceiver() as receiver, httpx.AsyncClient(base_url=stack.url) as http:
            resp = await http.post(
                "/async-function/echo/cb-path",
                json={"message": "async hello"},
                headers={"X-Callback-Url": receiver.url},
            )
            assert resp.status_code == 202
            call_id = resp.headers["x-call-id"]
            await receiver.wait(1)
        headers, body = receiver.received[0]
        assert headers["X-Call-Id"] == call_id
        assert headers["X-Function-Status"] == "200"
        assert headers["X-Function-Name"] == "echo"
        assert headers["X-Retry-Count"] == "0"
        assert float(headers["X-Duration-Seconds"]) >= 0
        assert json.loads(body) == {"message": "async hello", "data": None, "path": "/cb-path"}
        async with asyncio.timeout(30):
            while True:
                event = CallCompleted.model_validate_json((await completions.next_msg(30)).data)
                if event.call_id == call_id:
                    break
        assert event.state == "succeeded" and event.status_code == 200
        assert json.loads(base64.b64decode(event.body_b64))["message"] == "async hello"
    finally:
        await nc.close()


async def test_retries_then_success(stack: EmbeddedStack, tmp_path: Path) -> None:
    async with CallbackReceiver() as receiver, httpx.AsyncClient(base_url=stack.url) as http:
        body = {"key": "retry-ok", "failures": 2, "state_dir": str(tmp_path)}
        resp = await http.post(
            "/async-function/fail-n-times", json=body, headers={"X-Callback-Url": receiver.url}
        )
        assert resp.status_code == 202
        await receiver.wait(1)
    headers, answer = receiver.received[0]
    assert headers["X-Function-Status"] == "200"
    assert headers["X-Retry-Count"] == "2"
    assert json.loads(answer) == {"key": "retry-ok", "attempts": 3}
    status = httpx.get(f"{stack.url}/async-function/status/{resp.headers['x-call-id']}").json()
    assert status["state"] == "succeeded" and status["attempts"] == 3


def test_dead_letter_then_redrive(admin: httpx.Client, client: httpx.Client, tmp_path: Path):
    # Retry-After 0 keeps the eight attempts quick; the ninth call succeeds
    body = {"key": "dlq", "failures": 8, "retry_after_seconds": 0, "state_dir": str(tmp_path)}
    call_id = client.post("/async-function/fail-n-times", json=body).headers["x-call-id"]
    dead = wait_call(client, call_id, ("dead-lettered",))
    assert dead["attempts"] == 8 and dead["status_code"] == 503
    assert "planned failure 8 of 8" in dead["last_error"]
    letters = admin.get("/system/dead-letters").json()
    assert [x["call"]["call_id"] for x in letters].count(call_id) == 1
    assert admin.post(f"/system/dead-letters/{call_id}/redrive").status_code == 202
    done = wait_call(client, call_id, ("succeeded",))
    assert done["attempts"] == 1  # attempts start again after a redrive
    assert call_id not in [x["call"]["call_id"] for x in admin.get("/system/dead-letters").json()]
    assert admin.post(f"/system/dead-letters/{call_id}/redrive").status_code == 404


def test_permanent_failure_is_not_retried(client: httpx.Client) -> None:
    call_id = client.post("/async-function/echo", json={"wrong": 1}).headers["x-call-id"]
    failed = wait_call(client, call_id, ("failed",))
    assert failed["attempts"] == 1 and failed["status_code"] == 422


def test_repeated_call_id_runs_once(client: httpx.Client, tmp_path: Path) -> None:
    call_id = f"dedupe-{uuid.uuid4().hex}"
    body = {"key": "dedupe", "failures": 0, "state_dir": str(tmp_path)}
    first = client.post("/async-function/fail-n-times", json=body, headers={"X-Call-Id": call_id})
    again = client.post("/async-function/fail-n-times", json=body, headers={"X-Call-Id": call_id})
    assert first.status_code == again.status_code == 202
    # the caller's id, in the namespace of callers' ids (never one the platform makes)
    assert again.headers["x-call-id"] == f"x-{call_id}" and again.headers["x-duplicate"] == "true"
    wait_call(client, f"x-{call_id}", ("succeeded",))
    # a third copy after completion is still a duplicate; one execution in all
    third = client.post("/async-function/fail-n-times", json=body, headers={"X-Call-Id": call_id})
    assert third.headers["x-duplicate"] == "true"
    assert (tmp_path / "dedupe.attempts").read_text() == "1"


def test_bad_async_headers_are_400(client: httpx.Client) -> None:
    bad_id = client.post("/async-function/echo", json={}, headers={"X-Call-Id": "a b/c"})
    assert bad_id.status_code == 400 and "X-Call-Id" in bad_id.json()["reason"]
    bad_cb = client.post("/async-function/echo", json={}, headers={"X-Callback-Url": "ftp://x"})
    assert bad_cb.status_code == 400 and "X-Callback-Url" in bad_cb.json()["reason"]
    assert client.get("/async-function/status/unknown-id").status_code == 404


def test_killed_replica_loses_no_accepted_call(stack: EmbeddedStack, client: httpx.Client):
    calls = [
        client.post("/async-function/victim", json={"seconds": 1.0}).headers["x-call-id"]
        for _ in range(60)
    ]

    def one_running() -> bool:
        states = (client.get(f"/async-function/status/{c}").json()["state"] for c in calls)
        return any(state == "running" for state in states)

    # kill the only replica while calls are inside it (each lasts 1 s), so that some
    # are cut and must be redelivered; whichever calls run then, however slow the
    # posting was on a loaded machine
    wait_for(one_running)
    (pid,) = stack.replica_pids("victim")
    psutil.Process(pid).kill()
    states = [wait_call(client, c, ("succeeded", "failed", "dead-lettered")) for c in calls]
    assert [s["state"] for s in states] == ["succeeded"] * len(calls)
    assert any(s["attempts"] > 1 for s in states)  # some calls were cut and retried
    new_pids = wait_for(lambda: stack.replica_pids("victim"))
    assert new_pids != [pid]
