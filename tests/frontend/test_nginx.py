"""Debian's nginx, configured by ``mxt proxy nginx``, in front of a running stack.

The test starts its own nginx master (never the system service) on a free port with
its prefix in a temporary directory. Paths that climb (``..``, encoded or not) or have
empty segments (``//``) are refused by nginx itself, which its access log shows (no
upstream address); other paths reach the gateway exactly as the client wrote them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import pytest
import websockets

from gateway.events import EventPublisher, TaskStateChanged
from local.natsd import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT = 120  # seconds: a hang guard only; lazy functions start cold on a busy machine
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx(NamedTuple):
    """A running nginx master: its base URL and its prefix directory (logs)."""

    url: str
    prefix: Path


@pytest.fixture(scope="module")
def nginx(frontend_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """An nginx master serving the configuration ``mxt proxy nginx`` wrote."""
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "mxt"),
            "proxy",
            "nginx",
            "--out",
            str(prefix / "nginx.conf"),
        ]
        + ["--gateway", frontend_stack.url, "--listen", str(port)]
        + ["--stack", str(frontend_stack.stack_file)],
        check=True,
        cwd=REPO,
    )
    # as root, nginx's workers would switch to "nobody", who cannot enter pytest's tmp dir
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    with (prefix / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", "nginx.conf", "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        try:
            wait_for_port("127.0.0.1", port, 10)
        except TimeoutError:
            raise RuntimeError((prefix / "stderr.log").read_text()) from None
        yield Nginx(f"http://127.0.0.1:{port}", prefix)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def nginx_url(nginx: Nginx) -> str:
    """Base URL of the nginx master."""
    return nginx.url


@pytest.fixture()
def admin(frontend_stack: Any) -> tuple[str, str]:
    return frontend_stack.auth


# method, path, JSON body, needs auth, expected status (answered by the stack's functions)
PROXY_TABLE = [
    ("GET", "/mxt/runs?limit=5", None, False, 200),
    ("GET", "/mxt_configdb/programmes", None, False, 200),
    ("GET", "/mxt_missiondb/observations", None, False, 200),
    ("GET", "/caldb/files", None, False, 200),
    ("POST", "/mxt_gp_pipeline/runs", {}, True, 422),
    ("POST", "/mxt_cp_pipeline/runs", {}, True, 422),
    ("POST", "/mxt_too_pipeline/runs", {}, True, 422),
    ("GET", "/mxt_websocket/", None, False, 200),
    ("POST", "/function/echo", {"message": "through nginx"}, False, 200),
    ("POST", "/async-function/echo", {"message": "later"}, False, 202),
    ("GET", "/system/functions", None, True, 200),
    ("GET", "/system/functions", None, False, 401),
    ("GET", "/ui/", None, False, 200),
    ("GET", "/healthz", None, False, 200),
    ("GET", "/no/such/path", None, False, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "auth", "status"), PROXY_TABLE)
def test_every_proxy_path_answers_through_nginx(
    nginx_url, frontend_stack, admin, method, path, body, auth, status
):
    kwargs: dict[str, Any] = {"auth": admin if auth else None, "timeout": HTTP_TIMEOUT}
    if body is not None:
        kwargs["json"] = body
    via_nginx = httpx.request(method, nginx_url + path, **kwargs)
    direct = httpx.request(method, frontend_stack.url + path, **kwargs)
    assert via_nginx.status_code == direct.status_code == status, via_nginx.text
    kind = via_nginx.headers.get("content-type", "").split(";")[0]
    assert kind == direct.headers.get("content-type", "").split(";")[0]
    if kind == "application/json":
        payload = via_nginx.json()
        if status == 422:
            assert "raw_key" in via_nginx.text  # the missing field is named
        if status == 404:
            assert "no/such/path" in json.dumps(payload)


def test_root_redirects_to_dashboard(nginx_url):
    response = httpx.get(nginx_url + "/", timeout=HTTP_TIMEOUT)
    assert response.status_code == 302
    assert response.headers["location"].endswith("/ui/")


def test_body_limit_enforced_by_nginx(nginx_url):
    # async bodies travel in one NATS message: nginx refuses more than 1 MiB itself
    response = httpx.post(
        nginx_url + "/async-function/echo", content=b"x" * (2 * 1024 * 1024), timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 413


async def test_websocket_upgrades_through_nginx(nginx_url, frontend_stack):
    ws_url = nginx_url.replace("http://", "ws://") + "/mxt_websocket/events?run=r-nginx-ws"
    async with websockets.connect(ws_url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert hello["type"] == "hello"
        publisher = EventPublisher(frontend_stack.nats_url)
        event = TaskStateChanged(run_id="r-nginx-ws", task="detect", state="running", attempt=1)
        await publisher.publish(event)
        await publisher.close()
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert frame["type"] == "event"
        assert frame["run_id"] == "r-nginx-ws"
        assert frame["event"]["task"] == "detect"
        assert frame["seq"] > hello["since_seq"]


def _append_log(base: str, admin: tuple[str, str], run_id: str, message: str) -> None:
    line = {
        "time": datetime.now(UTC).isoformat(),
        "level": "INFO",
        "message": message,
        "run_id": run_id,
        "function": "brick-detect",
    }
    response = httpx.post(
        f"{base}/mxt_missiondb/logs", json={"lines": [line]}, auth=admin, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 201, response.text


def _next_sse_event(lines: Iterator[str]) -> dict[str, str]:
    """The next server-sent event (its fields) from an iterator of lines."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if fields:
                return fields
            continue
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    raise AssertionError(f"stream ended inside or before an event: {fields}")


def test_followed_logs_stream_unbuffered(nginx_url, admin):
    # A pending run never ends by itself, so its followed logs never end while we read:
    # each line can only arrive if nginx passes it on at once.
    run_id = f"r-follow-{int(time.time() * 1000)}"
    created = httpx.post(
        nginx_url + "/mxt_missiondb/runs",
        json={"run_id": run_id, "programme": "ToO", "bricks": ["detect"]},
        auth=admin,
        timeout=HTTP_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    _append_log(nginx_url, admin, run_id, "first line, written before following")
    url = f"{nginx_url}/mxt/runs/{run_id}/logs?follow=true"
    with httpx.stream("GET", url, timeout=HTTP_TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = _next_sse_event(lines)
        assert first["event"] == "log"
        assert json.loads(first["data"])["message"].startswith("first line")
        _append_log(nginx_url, admin, run_id, "second line, written while following")
        second = _next_sse_event(lines)
        assert json.loads(second["data"])["message"].startswith("second line")


def test_function_deployed_after_nginx_started_is_reachable(nginx_url, admin):
    handler = str(REPO / "tests/functions/echo")
    deployment = {
        "service": "late-echo",
        "image": "x",
        "handler": handler,
        "annotations": {"com.mxt.access": "public"},
    }
    response = httpx.post(
        nginx_url + "/system/functions", json=deployment, auth=admin, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 202, response.text
    try:
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.post(
                nginx_url + "/function/late-echo", json={"message": "new"}, timeout=HTTP_TIMEOUT
            )
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the replica is starting (503 meanwhile)
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"] == "new"
    finally:
        httpx.request(
            "DELETE",
            nginx_url + "/system/functions",
            json={"functionName": "late-echo"},
            auth=admin,
        )


def _raw_request(
    base: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` byte for byte (httpx would remove dot segments); status, headers, body."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        answer = {k.lower(): v for k, v in response.getheaders()}
        return response.status, answer, response.read()
    finally:
        connection.close()


def _logged(nginx: Nginx, method: str, targets: list[str]) -> dict[str, list[str]]:
    """The access log lines of each target (nginx writes them just after answering)."""
    deadline = time.monotonic() + 10
    while True:
        lines = (nginx.prefix / "access.log").read_text().splitlines()
        found = {t: [x for x in lines if f'"{method} {t} HTTP/1.1"' in x] for t in targets}
        if all(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# as the client sends them: climbing out of /function/echo or /async-function/echo towards
# /system, with dots and slashes plain, percent-encoded once or twice, in either case
CLIMBING = [
    "/function/echo/../../system/functions",
    "/function/echo/%2e%2e/%2e%2e/system/functions",
    "/function/echo/%2E./%2E./system/functions",
    "/function/echo/.%2e/.%2e/system/functions",
    "/function/echo/%252e%252e/%252e%252e/system/functions",
    "/async-function/echo/..%2f..%2fsystem/functions",
    "/function/echo/./x",
    "//system/functions",
    "/function/echo//x",
]


def test_climbing_paths_refused_by_nginx_before_the_gateway(nginx, frontend_stack):
    auth = {"Authorization": frontend_stack.auth_header}  # /system would answer the admin
    for target in CLIMBING:
        status, headers, body = _raw_request(nginx.url, "GET", target, auth)
        assert status == 400, (target, status, body)
        assert headers["content-type"] == "application/json", target
        assert "refused by the proxy" in json.loads(body)["reason"], target
        assert headers["x-content-type-options"] == "nosniff", target
    # nginx answered them itself: no upstream address in its access log, for any of them
    for target, logged in _logged(nginx, "GET", CLIMBING).items():
        assert logged, f"{target} not in the access log"
        assert all(line.endswith(" upstream=-") for line in logged), logged
    # the same targets straight to the gateway are refused there too (defence in depth),
    # none of them reaches /system
    for target in CLIMBING[1:6]:
        status, _, body = _raw_request(frontend_stack.url, "GET", target, auth)
        assert status in (400, 404), (target, status, body)


def test_paths_reach_the_gateway_unchanged(nginx, frontend_stack):
    # encoded slash, space, UTF-8, dots inside names, and a query with "../" and "//":
    # the echo function says which sub-path it received (decoded by its runtime), the
    # same through nginx as directly; nginx's log shows it forwarded the request
    target = "/function/echo/a%20b/c%2Fd/caf%C3%A9/file..fits/.hidden?x=../..//y"
    body = json.dumps({"message": "raw"}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, via_nginx = _raw_request(nginx.url, "POST", target, headers, body)
    direct_status, _, direct = _raw_request(frontend_stack.url, "POST", target, headers, body)
    assert status == direct_status == 200, via_nginx
    assert json.loads(via_nginx)["path"] == json.loads(direct)["path"]
    assert json.loads(via_nginx)["path"] == "/a b/c/d/café/file..fits/.hidden"
    logged = _logged(nginx, "POST", [target])[target]
    assert logged and " upstream=127.0.0.1:" in logged[-1], logged


def test_dashboard_security_headers_through_nginx(nginx_url):
    response = httpx.get(nginx_url + "/ui/", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # once each: nginx adds none of its own to what it forwards
    assert len(response.headers.get_list("content-security-policy")) == 1
    redirect = httpx.get(nginx_url + "/", timeout=HTTP_TIMEOUT)
    assert redirect.headers["x-frame-options"] == "DENY"
