"""Attacks on a running stack, each sent as the attacker would send it.

One real stack for the module (gateway, queue worker, connector, nats-server with a
password, and a process per function: the orchestrator's, the bricks, the persistence
functions and ``echo``), started once. Every test sends its attack, asserts the refusal
it must get, and leaves the stack healthy (``assert_healthy`` after each test); once all
attacks are done, a good ToO observation still runs to ``succeeded`` with every brick
once (the module fixture's finalizer).

Covered elsewhere, not repeated here: connecting to the bus without credentials and
publishing forged completions (``test_bus.py``; here only: a run started legitimately
is not affected), and callbacks to loopback (``test_callbacks.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import psutil
import pytest
import websockets
from nats.errors import Error as NatsError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from local.chainkit import fits_bytes
from local.natsd import free_port
from local.stack import STATE_FILE, EmbeddedStack, write_stack_file
from tests.security.conftest import (
    REQUEST_TIMEOUT,
    Actors,
    add_actors,
    assert_clean_success,
    assert_healthy,
    client,
    good_observation,
    nats_by_hand,
    new_obs_id,
    put_raw,
    raw_key,
    raw_request,
    run_of,
    simulated_l0,
    start_security_stack,
    upload,
    wait_run,
)

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "tests" / "functions" / "echo"
#: the websocket hub's client cap in this stack (``MXT_WS_MAX_CLIENTS``)
WS_MAX_CLIENTS = 100
WS_ATTACKERS = 300
VIOLATION = "Authorization Violation"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    running = start_security_stack(
        tmp_path_factory.mktemp("attacked"), env={"MXT_WS_MAX_CLIENTS": str(WS_MAX_CLIENTS)}
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def actors(stack: EmbeddedStack) -> Actors:
    return add_actors(stack)


@pytest.fixture(scope="module")
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    with client(stack) as gateway:
        yield gateway


@pytest.fixture(scope="module", autouse=True)
def a_good_observation_succeeds_after_all_attacks(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> Iterator[None]:
    yield
    assert_healthy(stack)
    assert_clean_success(good_observation(http, actors))


@pytest.fixture(autouse=True)
def healthy_after(stack: EmbeddedStack) -> Iterator[None]:
    yield
    assert_healthy(stack)


@pytest.fixture(scope="module")
def finished_run(http: httpx.Client, actors: Actors) -> dict[str, Any]:
    """A good run that has ended: "another run" whose products an attacker points at."""
    run = good_observation(http, actors)
    assert_clean_success(run)
    return run


def _function_names(http: httpx.Client, actors: Actors) -> set[str]:
    answer = http.get("/system/functions", headers=actors.admin)
    assert answer.status_code == 200, answer.text
    return {f["name"] for f in answer.json()}


def _started_run(http: httpx.Client, actors: Actors, stack: EmbeddedStack) -> dict[str, Any]:
    """A run started the operator's way: an L0 in the raw bucket, ``POST /mxt/runs``."""
    obs_id = new_obs_id()
    ref = put_raw(stack, obs_id, fits_bytes(simulated_l0(obs_id)))
    answer = http.post("/mxt/runs", json={"raw_key": ref}, headers=actors.operator)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _refusal(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text)
    assert answer.json()["kind"] == "bad_input"


# -- 1. climbing to /system, and deploying code ------------------------------------------

CLIMBS = [
    ("GET", "/function/echo/../../system/functions"),
    ("POST", "/function/echo/../../system/functions"),
    ("POST", "/async-function/echo/../../system/functions"),
    ("GET", "/function/echo/%2e%2e/%2e%2e/system/functions"),
    ("POST", "/async-function/echo/%2e%2e/%2e%2e/system/functions"),
    ("POST", "/function/echo/%2E%2E/%2E%2E/system/functions"),
    ("GET", "/function/echo/%252e%252e/%252e%252e/system/functions"),
    ("POST", "/async-function/echo/%252e%252e/%252e%252e/system/functions"),
    ("GET", "/function/echo/..%2f..%2fsystem%2ffunctions"),
    ("GET", "/function/echo/.%2e/%2e./system/functions"),
    ("GET", "/function/echo/..\\..\\system\\functions"),
    ("GET", "/function/echo/x//../../system/functions"),
    ("POST", "/function/echo/x//system/functions"),
    ("POST", "/async-function/echo/x//system/functions"),
    ("GET", "/function/../system/functions"),
    ("POST", "/function/echo/../brick-ingest"),
    ("POST", "/async-function/echo/../../function/brick-ingest"),
    ("POST", "/async-function/echo/%2e%2e/brick-ingest"),
]


def test_path_climbing_never_reaches_system(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> None:
    before = _function_names(http, actors)
    # a deployment request that /system/functions would take from the admin
    deploy = json.dumps({"service": "climbed", "handler": str(ECHO)}).encode()
    for who in (actors.anonymous, actors.operator, actors.admin):
        for method, target in CLIMBS:
            headers = {**who, "Content-Type": "application/json"}
            status, body = raw_request(stack.url, method, target, headers, deploy)
            assert status in (400, 404), (method, target, status, body)
            assert b"climbed" not in body
    assert _function_names(http, actors) == before
    assert http.get("/system/function/climbed", headers=actors.admin).status_code == 404


@pytest.mark.parametrize("prefix", ["/function", "/async-function"])
def test_an_empty_first_segment_is_refused_too(
    stack: EmbeddedStack, actors: Actors, prefix: str
) -> None:
    """docs/security.md: sub-paths with empty segments (``//``) are refused with 400.

    ``safe_subpath`` strips the sub-path's leading slashes, so ``echo//system/functions``
    reaches echo (sub-path ``/system/functions``) instead of being refused.
    """
    body = json.dumps({"message": "climb"}).encode()
    headers = {"Content-Type": "application/json"}
    status, answer = raw_request(
        stack.url, "POST", f"{prefix}/echo//system/functions", headers, body
    )
    assert status in (400, 404), (status, answer)


def test_deploying_code_is_the_admins_and_only_from_the_function_folders(
    actors: Actors, http: httpx.Client, tmp_path: Path
) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "handler.py").write_text("import os\n\ndef handle(req):\n    return dict(os.environ)\n")
    before = _function_names(http, actors)

    def deploy(headers: dict[str, str], **body: Any) -> httpx.Response:
        return http.post("/system/functions", json={"service": "evil", **body}, headers=headers)

    _refusal(deploy(actors.anonymous, handler=str(ECHO)), 401)
    _refusal(deploy(actors.scientist, handler=str(ECHO)), 403)
    _refusal(deploy(actors.operator, handler=str(ECHO)), 403)
    outside = deploy(actors.admin, handler=str(evil))
    _refusal(outside, 400)
    assert "outside the stack's function folders" in outside.json()["reason"]
    climbing = deploy(actors.admin, handler=f"functions/../../../../../..{evil}")
    _refusal(climbing, 400)
    for name in ("LD_PRELOAD", "MXT_SECRETS_DIR", "PYTHONPATH", "MXT_NATS_URL"):
        refused = deploy(actors.admin, handler=str(ECHO), envVars={name: str(tmp_path)})
        _refusal(refused, 400)
        assert name in refused.json()["reason"]
    # nor through an update of a function that exists
    update = http.put(
        "/system/functions",
        json={"service": "echo", "handler": str(evil)},
        headers=actors.admin,
    )
    _refusal(update, 400)
    assert _function_names(http, actors) == before


def test_the_platform_credential_does_not_open_system(actors: Actors, http: httpx.Client) -> None:
    """docs/security.md: the platform token "reaches internal functions; it does not open
    /system" (gateway/policy.py: "may call every function, but not /system").

    Each request would change nothing even if it were admitted (a handler that does not
    exist, a replica count out of range, a function that does not exist), so that a
    failure of this test leaves the stack as it was.
    """
    before = _function_names(http, actors)
    token = actors.platform
    for method, path, body in (
        ("POST", "/system/functions", {"service": "evil", "handler": "/nonexistent/evil"}),
        ("PUT", "/system/functions", {"service": "echo", "handler": "/nonexistent/evil"}),
        ("DELETE", "/system/functions", {"functionName": "no-such-function"}),
        ("POST", "/system/scale-function/echo", {"replicas": 10_000}),
        ("GET", "/system/functions", None),
        ("GET", "/system/logs?name=brick-ingest&tail=5", None),
    ):
        _refusal(http.request(method, path, json=body, headers=token), 403)
    assert _function_names(http, actors) == before


# -- 2. calling internal functions ------------------------------------------------------


def _forged_completion(run_id: str, other: dict[str, Any], http: httpx.Client) -> dict[str, Any]:
    """A "succeeded" completion of ``run_id``'s notice whose outputs are ``other``'s."""
    products = http.get(f"/mxt/runs/{other['run_id']}/products").json()["items"]
    outputs = {
        p["name"]: {"ref": f"{p['bucket']}/{p['key']}", "sha256": "0" * 64, "size": 1}
        for p in products
        if p["name"].startswith("notice")
    }
    assert outputs, products
    answer = {
        "brick": "notice",
        "version": "1",
        "run_id": run_id,
        "task_id": f"{run_id}.notice",
        "outputs": outputs,
        "provenance": {},
    }
    return {
        "call_id": f"{run_id}_notice_1",
        "function": "brick-notice",
        "state": "succeeded",
        "status_code": 200,
        "attempts": 1,
        "duration": 0.1,
        "body_b64": base64.b64encode(json.dumps(answer).encode()).decode(),
        "content_type": "application/json",
    }


def _raw_arrival(obs_id: str) -> dict[str, Any]:
    """A MinIO object-created event for an L0 file in the raw bucket."""
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"raw/{raw_key(obs_id)}",
        "Records": [
            {
                "eventTime": "2026-02-25T12:00:00.000Z",
                "s3": {"bucket": {"name": "raw"}, "object": {"key": raw_key(obs_id)}},
            }
        ],
    }


def test_nobody_but_the_platform_calls_internal_functions(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client, finished_run: dict[str, Any]
) -> None:
    live = _started_run(http, actors, stack)
    run_id = live["run_id"]
    loose_obs = new_obs_id()
    put_raw(stack, loose_obs, fits_bytes(simulated_l0(loose_obs)))
    brick_request = {
        "run_id": run_id,
        "task_id": f"{run_id}.ingest",
        "inputs": {"l0": f"raw/{raw_key(loose_obs)}"},
    }
    calls = [
        ("/function/brick-ingest", brick_request),
        ("/async-function/brick-detect", {**brick_request, "task_id": f"{run_id}.detect"}),
        ("/function/orchestrator-advance", _forged_completion(run_id, finished_run, http)),
        ("/async-function/orchestrator-advance", _forged_completion(run_id, finished_run, http)),
        ("/function/orchestrator-raw-arrived", _raw_arrival(loose_obs)),
    ]
    wrong_token = {"X-Mxt-Platform-Token": "guess"}
    for path, body in calls:
        for who, status in (
            (actors.anonymous, 401),
            (wrong_token, 401),
            ({"X-Mxt-Platform-Token": ""}, 401),
            (actors.scientist, 403),
            (actors.operator, 403),
            (actors.admin, 403),
        ):
            _refusal(http.post(path, json=body, headers=who), status)
    # straight to the replicas' ports, past the gateway: the replica wants the token
    for function in ("brick-ingest", "orchestrator-advance", "orchestrator-raw-arrived"):
        (replica,) = stack.replica_urls(function)
        body = dict(calls)[f"/function/{function}"]
        for headers in ({}, wrong_token, actors.admin):
            answer = httpx.post(replica, json=body, headers=headers, timeout=REQUEST_TIMEOUT)
            assert answer.status_code == 403, (function, answer.text)
    # none of it touched the run, and the raw file started none
    run = wait_run(http, run_id)
    assert_clean_success(run)
    products = http.get(f"/mxt/runs/{run_id}/products").json()["items"]
    assert products and all(p["key"].startswith(f"{run_id}/") for p in products), products
    assert http.get("/mxt/runs", params={"obs_id": loose_obs}).json()["items"] == []


# -- 3. forged completions on the bus --------------------------------------------------


def _plain_nats(url: str) -> tuple[str, str, int]:
    """The NATS URL without its credentials; its host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    return urlunsplit((parts.scheme, f"{host}:{port}", "", "", "")), host, port


def _raw_publish(host: str, port: int, messages: list[tuple[str, bytes]]) -> bytes:
    """The NATS protocol by hand, without credentials: CONNECT, PUBs, PING; the answer."""
    lines = [b'CONNECT {"verbose":false,"pedantic":false}']
    for subject, payload in messages:
        lines += [f"PUB {subject} {len(payload)}".encode(), payload]
    lines.append(b"PING")
    return nats_by_hand(host, port, lines)


async def _quiet(error: Exception) -> None:
    """Keep the refused connection's errors out of the log."""


def test_a_run_is_not_affected_by_forged_completions_on_the_bus(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client, finished_run: dict[str, Any]
) -> None:
    live = _started_run(http, actors, stack)
    run_id = live["run_id"]
    url, host, port = _plain_nats(stack.nats_url)

    async def refused() -> str:
        try:
            nc = await nats.connect(url, allow_reconnect=False, error_cb=_quiet)
        except NatsError as exc:
            return str(exc)
        await nc.close()
        raise AssertionError("the bus took a client without credentials")

    assert VIOLATION in asyncio.run(refused())
    forged = []
    for brick in ("notice", "quicklook", "detect"):
        completion = _forged_completion(run_id, finished_run, http)
        completion.update(call_id=f"{run_id}_{brick}_1", function=f"brick-{brick}")
        forged.append((f"mxt.calls.completed.brick-{brick}", json.dumps(completion).encode()))
    failed = {**json.loads(forged[0][1]), "state": "failed", "status_code": 422}
    forged.append(("mxt.calls.completed.brick-notice", json.dumps(failed).encode()))
    forged.append(("mxt.storage.raw", json.dumps(_raw_arrival(new_obs_id())).encode()))
    answer = _raw_publish(host, port, forged)
    assert VIOLATION.encode() in answer and b"PONG" not in answer
    run = wait_run(http, run_id)
    assert_clean_success(run)
    products = http.get(f"/mxt/runs/{run_id}/products").json()["items"]
    assert all(p["key"].startswith(f"{run_id}/") for p in products), products


# -- 5. squatting the call ids of a live run -------------------------------------------


async def _first_run_event(url: str, obs_id: str, start: Any) -> str:
    """Watch the public live feed while ``start()`` runs; the run id of ``obs_id``."""
    async with websockets.connect(url, open_timeout=REQUEST_TIMEOUT) as feed:
        hello = json.loads(await asyncio.wait_for(feed.recv(), REQUEST_TIMEOUT))
        assert hello["type"] == "hello", hello
        await asyncio.to_thread(start)
        while True:
            frame = json.loads(await asyncio.wait_for(feed.recv(), 60))
            if frame["type"] == "event" and frame["event"].get("obs_id") == obs_id:
                return frame["run_id"]


def _squat(http: httpx.Client, headers: dict[str, str], call_id: str) -> httpx.Response:
    answer = http.post(
        "/async-function/echo",
        json={"message": "squatted"},
        headers={**headers, "X-Call-Id": call_id},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["X-Call-Id"] == f"x-{call_id}", answer.headers
    return answer


def test_squatting_a_live_runs_call_ids_does_not_stall_it(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> None:
    obs_id = new_obs_id()
    data = fits_bytes(simulated_l0(obs_id))

    def submit() -> None:
        answer = upload(http, actors.operator, obs_id, data)
        assert answer.status_code == 201, answer.text

    feed = stack.url.replace("http://", "ws://") + "/mxt_websocket/events?kind=run"
    run_id = asyncio.run(_first_run_event(feed, obs_id, submit))
    assert run_of(http, obs_id)["run_id"] == run_id  # the public list says the same
    bricks = [task["brick"] for task in http.get(f"/mxt/runs/{run_id}").json()["tasks"]]
    assert "detect" in bricks and "quicklook" in bricks, bricks
    # before the tasks are dispatched: every attempt id the orchestrator will use,
    # quicklook's first (it waits for detect, lightcurve and spectrum)
    squatted = []
    for brick in sorted(bricks, key=lambda b: b != "quicklook"):
        for attempt in (1, 2):
            squatted.append(f"{run_id}_{brick}_{attempt}")
            _squat(http, actors.anonymous, squatted[-1])
        _squat(http, actors.operator, f"{run_id}_{brick}_1")
        if brick == "quicklook":
            tasks = http.get(f"/mxt/runs/{run_id}").json()["tasks"]
            last = next(t for t in tasks if t["brick"] == brick)
            assert last["state"] == "pending", f"squatted after the dispatch: {last}"
    # while the run proceeds: the ids of the tasks as they are dispatched
    while (run := http.get(f"/mxt/runs/{run_id}").json())["state"] == "running":
        for task in run["tasks"]:
            if task["call_id"]:
                _squat(http, actors.anonymous, task["call_id"])
        time.sleep(0.1)
    run = wait_run(http, run_id)
    assert_clean_success(run)
    for brick in bricks:
        own = http.get(f"/async-function/status/{run_id}_{brick}_1").json()
        assert own["function"] == f"brick-{brick}" and own["state"] == "succeeded", own
    for call_id in squatted:
        theirs = http.get(f"/async-function/status/x-{call_id}").json()
        assert theirs["function"] == "echo", theirs
    logs = http.get(f"/mxt/runs/{run_id}/logs").json()["items"]
    assert logs and not [line for line in logs if line["function"] == "echo"], logs


# -- 6. forged run and task headers -------------------------------------------------------


def test_forged_run_headers_never_reach_a_function(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> None:
    run_id = _started_run(http, actors, stack)["run_id"]
    forged = {"X-Mxt-Run-Id": run_id, "X-Mxt-Task-Id": f"{run_id}.detect"}
    marks = {}
    for who_name, who in (("anonymous", actors.anonymous), ("operator", actors.operator)):
        for mode in ("sync", "async"):
            mark = f"forged-{who_name}-{mode}-{uuid.uuid4().hex[:8]}"
            headers = {**who, **forged, "X-Call-Id": mark, "X-Mxt-User": "admin"}
            path = "/function/echo" if mode == "sync" else "/async-function/echo"
            answer = http.post(path, json={"message": mark}, headers=headers)
            assert answer.status_code == (200 if mode == "sync" else 202), answer.text
            marks[f"x-{mark}"] = mode
            # with a guessed platform token the call is refused before any function
            guessed = http.post(
                path,
                json={"message": mark},
                headers={**headers, "X-Mxt-Platform-Token": "guess"},
            )
            _refusal(guessed, 401)
    for call_id, mode in marks.items():
        if mode == "async":
            deadline = time.monotonic() + 60
            while http.get(f"/async-function/status/{call_id}").json()["state"] != "succeeded":
                assert time.monotonic() < deadline, call_id
                time.sleep(0.1)
    # the control: the same headers from the platform do write into the run's log
    control = f"control-{uuid.uuid4().hex[:8]}"
    answer = http.post(
        "/function/echo",
        json={"message": control},
        headers={**actors.platform, **forged, "X-Call-Id": control},
    )
    assert answer.status_code == 200, answer.text
    assert_clean_success(wait_run(http, run_id))
    deadline = time.monotonic() + 30
    while True:
        logs = http.get(f"/mxt/runs/{run_id}/logs", params={"function": "echo"}).json()["items"]
        if any(line["call_id"] == control for line in logs):
            break
        assert time.monotonic() < deadline, f"the platform's line is not in the run's log: {logs}"
        time.sleep(0.2)
    assert {line["call_id"] for line in logs} == {control}, logs


INJECTIONS = ["%0D%0AX-Mxt-Run-Id:%20r-forged", "%0AX-Mxt-Task-Id:%20x", "%00", "%1F", "%7F"]


@pytest.mark.parametrize("injected", INJECTIONS)
def test_a_header_injected_through_a_resource_path_is_refused(
    stack: EmbeddedStack, actors: Actors, injected: str
) -> None:
    """A resource path is forwarded in ``X-Forwarded-Uri``: a CR, LF or other control
    character in it must be refused (4xx), not end in a broken header or a 500."""
    for method, target, headers in (
        ("GET", f"/mxt/runs/r-x{injected}", actors.anonymous),
        ("GET", f"/mxt/runs/r-x{injected}/logs", actors.anonymous),
        ("GET", f"/mxt_configdb/programmes/ToO{injected}", actors.anonymous),
        ("POST", f"/mxt/runs/r-x{injected}/cancel", actors.operator),
    ):
        body = b"{}" if method == "POST" else b""
        status, answer = raw_request(
            stack.url, method, target, {**headers, "Content-Type": "application/json"}, body
        )
        assert 400 <= status < 500, (method, target, status, answer)


# -- 7. a FITS header with a negative axis ---------------------------------------------

BLOCK = 2880


def _card(keyword: str, value: str) -> bytes:
    return f"{keyword:<8}= {value:>20}".ljust(80).encode("ascii")


def _text(keyword: str, value: str) -> bytes:
    return f"{keyword:<8}= {value!r:<20}".replace('"', "'").ljust(80).encode("ascii")


def _header(cards: list[bytes]) -> bytes:
    data = b"".join(cards) + b"END".ljust(80)
    return data + b" " * (-len(data) % BLOCK)


def hostile_l0(obs_id: str) -> bytes:
    """An L0 file whose primary header is sound and whose EVENTS table says NAXIS1 = -5.

    576 rows of -5 bytes are -2880 bytes: a walker trusting the header goes back one
    block, to the header it has just read, for ever.
    """
    primary = _header(
        [
            _card("SIMPLE", "T"),
            _card("BITPIX", "8"),
            _card("NAXIS", "0"),
            _card("EXTEND", "T"),
            _text("OBS_ID", obs_id),
            _text("PROGRAM", "TargetOfOpportunity-Nom"),
            _text("DATE-OBS", "2026-02-25T12:05:00"),
            _card("TSTART", "288000300.0"),
        ]
    )
    events = _header(
        [
            _text("XTENSION", "BINTABLE"),
            _card("BITPIX", "8"),
            _card("NAXIS", "2"),
            _card("NAXIS1", "-5"),
            _card("NAXIS2", "576"),
            _card("PCOUNT", "0"),
            _card("GCOUNT", "1"),
            _card("TFIELDS", "0"),
            _text("EXTNAME", "EVENTS"),
        ]
    )
    return primary + events


def _ingest(http: httpx.Client, actors: Actors, run_id: str, ref: str) -> httpx.Response:
    """brick-ingest called as the orchestrator calls it (platform credential, BrickRequest)."""
    request = {"run_id": run_id, "task_id": f"{run_id}.ingest", "inputs": {"l0": ref}}
    return http.post("/function/brick-ingest", json=request, headers=actors.platform)


def test_a_negative_axis_fits_is_refused_quickly_and_the_brick_keeps_serving(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> None:
    hostile_obs = new_obs_id()
    hostile = hostile_l0(hostile_obs)
    good_obs = new_obs_id()
    good_ref = put_raw(stack, good_obs, fits_bytes(simulated_l0(good_obs)))
    (pid,) = stack.replica_pids("brick-ingest")
    replica = psutil.Process(pid)
    warm = _ingest(http, actors, f"r-warm-{uuid.uuid4().hex[:8]}", good_ref)
    assert warm.status_code == 200, warm.text
    # submitted as an observation: the upload's arrival starts a run, which fails
    uploaded = upload(http, actors.operator, hostile_obs, hostile)
    assert uploaded.status_code == 201, uploaded.text
    run = wait_run(http, run_of(http, hostile_obs)["run_id"])
    assert run["state"] == "failed", run
    ingest = next(task for task in run["tasks"] if task["brick"] == "ingest")
    assert ingest["state"] == "failed" and "NAXIS1" in (ingest["error"] or ""), ingest
    # and again through POST /mxt/runs
    again = http.post(
        "/mxt/runs", json={"raw_key": f"raw/{raw_key(hostile_obs)}"}, headers=actors.operator
    )
    assert again.status_code == 201, again.text
    assert wait_run(http, again.json()["run_id"])["state"] == "failed"
    # straight to the brick with the platform's credential, as the orchestrator would
    rss = replica.memory_info().rss
    for _ in range(3):
        answer = _ingest(
            http, actors, f"r-hostile-{uuid.uuid4().hex[:8]}", f"raw/{raw_key(hostile_obs)}"
        )
        assert answer.status_code == 422, answer.text
        assert "NAXIS1" in answer.json()["reason"], answer.text
    grown = replica.memory_info().rss - rss
    assert grown < 64 * 2**20, f"brick-ingest grew by {grown / 2**20:.0f} MiB"
    assert stack.replica_pids("brick-ingest") == [pid]
    (replica_url,) = stack.replica_urls("brick-ingest")
    health = httpx.get(replica_url + "_/health", timeout=REQUEST_TIMEOUT)
    assert health.status_code == 200 and health.json()["pid"] == pid
    served = _ingest(http, actors, f"r-after-{uuid.uuid4().hex[:8]}", good_ref)
    assert served.status_code == 200, served.text


# -- 8. a crowd of websocket clients ---------------------------------------------------


async def _websocket_client(url: str, slots: asyncio.Semaphore) -> tuple[str, Any, Any]:
    """("open", hello frame type, socket) or ("closed", close code, None)."""
    async with slots:
        try:
            ws = await websockets.connect(url, open_timeout=60, close_timeout=5)
        except InvalidStatus as exc:
            return "http", exc.response.status_code, None
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
    except ConnectionClosed as exc:
        return "closed", exc.rcvd.code if exc.rcvd else None, None
    return "open", frame["type"], ws


async def _crowd(url: str, count: int) -> list[tuple[str, Any, Any]]:
    slots = asyncio.Semaphore(50)
    outcomes = await asyncio.gather(*(_websocket_client(url, slots) for _ in range(count)))
    await asyncio.gather(*(ws.close() for _, _, ws in outcomes if ws is not None))
    return [(kind, detail, None) for kind, detail, _ in outcomes]


async def _one_more(url: str) -> str:
    async with websockets.connect(url, open_timeout=REQUEST_TIMEOUT) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), REQUEST_TIMEOUT))["type"]


def test_a_crowd_of_websocket_clients_is_capped(stack: EmbeddedStack) -> None:
    url = stack.url.replace("http://", "ws://") + "/mxt_websocket/events"
    outcomes = asyncio.run(_crowd(url, WS_ATTACKERS))
    served = [o for o in outcomes if o[0] == "open"]
    refused = [o for o in outcomes if o[0] != "open"]
    assert all(detail == "hello" for _, detail, _ in served)
    assert len(served) == WS_MAX_CLIENTS, f"{len(served)} of {WS_ATTACKERS} clients served"
    assert {(kind, detail) for kind, detail, _ in refused} == {("closed", 1013)}, refused[:5]
    # once the crowd has gone, a client is served again
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(ConnectionClosed):
            if asyncio.run(_one_more(url)) == "hello":
                break
        assert time.monotonic() < deadline, "no client served after the crowd left"
        time.sleep(0.5)


# -- 9. secrets that are empty or malformed --------------------------------------------


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("command", "secret", "content", "said"),
    [
        ("python", "basic-auth-password", "", "is empty"),
        ("mxt", "basic-auth-password", "  \n", "is empty"),
        ("python", "platform-token", "\n", "is empty"),
        ("mxt", "platform-token", "", "is empty"),
        ("python", "users", "olivia:operator\n", "line 1"),
        ("mxt", "users", "# ok\nolivia:root:scrypt$1$2$3$4$5\n", "line 2"),
    ],
)
def test_a_stack_with_an_empty_or_malformed_secret_does_not_start(
    tmp_path: Path, command: str, secret: str, content: str, said: str
) -> None:
    stack_file = write_stack_file(
        tmp_path / "stack.yml",
        {
            "echo": {
                "lang": "python3-mxt",
                "handler": str(ECHO),
                "annotations": {"com.mxt.access": "public"},
            }
        },
    )
    data_dir = tmp_path / "data"
    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir(parents=True, mode=0o700)
    for name in ("basic-auth-password", "platform-token"):
        (secrets_dir / name).write_text(uuid.uuid4().hex)
    (secrets_dir / secret).write_text(content)
    port = free_port()
    arguments = ["--port", str(port), "--data-dir", str(data_dir), "--stack", str(stack_file)]
    if command == "mxt":
        program = Path(sys.executable).with_name("mxt")
        assert program.exists(), program
        argv = [str(program), "up", *arguments]
    else:
        argv = [sys.executable, "-m", "local.stack", *arguments]
    env = {k: v for k, v in os.environ.items() if k not in ("MXT_SECRETS_DIR", "MXT_NATS_URL")}
    finished = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0, finished
    message = finished.stdout + finished.stderr
    assert str(secrets_dir / secret) in message and said in message, message
    assert not _listening(port)
    assert not (data_dir / STATE_FILE).exists()
    # and nothing it would have started (nats-server, replicas) outlives it
    for process in psutil.process_iter(["cmdline"]):
        assert str(data_dir) not in " ".join(process.info["cmdline"] or []), process


# -- 10. who may do what -----------------------------------------------------------------


def test_roles_origins_and_media_types(
    stack: EmbeddedStack, actors: Actors, http: httpx.Client
) -> None:
    obs_id = new_obs_id()
    ref = put_raw(stack, obs_id, fits_bytes(simulated_l0(obs_id)))
    start = {"raw_key": ref}
    anonymous = http.post("/mxt/runs", json=start)
    _refusal(anonymous, 401)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    _refusal(http.post("/mxt/runs", json=start, headers=actors.scientist), 403)
    # a browser on another site, with the admin's remembered login
    evil = {**actors.admin, "Origin": "http://evil.example"}
    _refusal(http.post("/mxt/runs", json=start, headers=evil), 403)
    _refusal(http.request("DELETE", "/system/functions", json={"functionName": "echo"},
                          headers=evil), 403)  # fmt: skip
    text = http.post(
        "/mxt/runs",
        content=json.dumps(start),
        headers={**actors.operator, "Content-Type": "text/plain"},
    )
    _refusal(text, 415)
    assert http.get("/mxt/runs", params={"obs_id": obs_id}).json()["items"] == []
    started = http.post("/mxt/runs", json=start, headers=actors.operator)
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    cancel = f"/mxt/runs/{run_id}/cancel"
    _refusal(http.post(cancel, json={}), 401)
    _refusal(http.post(cancel, json={}, headers=actors.scientist), 403)
    cancelled = http.post(cancel, json={}, headers=actors.operator)
    assert cancelled.status_code in (200, 202), cancelled.text
    assert wait_run(http, run_id)["state"] == "cancelled"
    for who in (actors.anonymous, actors.scientist):
        listed = http.get("/mxt/runs", params={"obs_id": obs_id}, headers=who)
        assert listed.status_code == 200 and listed.json()["items"][0]["run_id"] == run_id
    _refusal(http.get("/system/functions"), 401)
    _refusal(http.get("/system/functions", headers=actors.scientist), 403)
    assert http.get("/system/functions", headers=actors.operator).status_code == 200
    assert http.get("/system/whoami", headers=actors.scientist).json()["role"] == "scientist"
