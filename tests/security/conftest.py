"""A processing stack to attack: real gateway, queue worker, connector, NATS and function
processes, with the chain's functions, the persistence functions and ``echo``, and the
users an attacker meets (anonymous, scientist, operator, admin, the platform).

Shared by ``test_attacks.py`` and ``test_fuzz.py``; each starts its own stack once
(module scope), so that the fuzzer's writes never reach the attacks' observations.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from local.chainkit import afterglow_scene, fits_bytes, prepare_data_dir, stack_subset
from local.stack import EmbeddedStack

#: repository functions served: the chain, its persistence, and the test stack's echo
SECURITY_FUNCTIONS = (
    "orchestrator",
    "brick-",
    "objects-",
    "missiondb-",
    "configdb-",
    "caldb-",
    "echo",
)
TERMINAL = ("succeeded", "failed", "cancelled")
#: seconds any one request may take before the test calls it a hang
REQUEST_TIMEOUT = 30.0


@dataclass
class Actors:
    """The request headers of everyone who may knock on the gateway."""

    stack: EmbeddedStack
    scientist: dict[str, str] = field(default_factory=dict)
    operator: dict[str, str] = field(default_factory=dict)
    anonymous: dict[str, str] = field(default_factory=dict)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": self.stack.auth_header}

    @property
    def platform(self) -> dict[str, str]:
        return self.stack.platform_headers


def start_security_stack(root: Path, env: dict[str, str] | None = None) -> EmbeddedStack:
    """Prepare a data directory (database, model CALDB) and start the stack on it."""
    data_dir = root / "data"
    prepare_data_dir(data_dir)
    stack_file = stack_subset(root / "stack.yml", SECURITY_FUNCTIONS)
    stack = EmbeddedStack(stack_file, data_dir, env={"MXT_DATA_DIR": str(data_dir), **(env or {})})
    return stack.start(timeout=180)


def add_actors(stack: EmbeddedStack) -> Actors:
    """A scientist and an operator added to the stack's users (the admin exists already)."""
    actors = Actors(
        stack,
        scientist=stack.add_user("sam", "scientist", "sam-" + uuid.uuid4().hex),
        operator=stack.add_user("olivia", "operator", "olivia-" + uuid.uuid4().hex),
    )
    # the gateway reads the users file again within a second of a change
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(stack.url + "/system/whoami", headers=actors.operator, timeout=30)
        if answer.status_code == 200:
            return actors
        assert time.monotonic() < deadline, f"users file not taken: {answer.text}"
        time.sleep(0.2)


# -- observations --------------------------------------------------------------------------


def new_obs_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def simulated_l0(obs_id: str | None = None) -> Any:
    """A small simulated ToO L0 file (GRB afterglow, a few thousand events)."""
    from bricks.simulate import simulate

    l0, _ = simulate(afterglow_scene(obs_id or new_obs_id()))
    return l0


def raw_key(obs_id: str) -> str:
    return f"{obs_id}/{obs_id}_mxt_l0.fits"


def upload(http: httpx.Client, headers: dict[str, str], obs_id: str, data: bytes) -> httpx.Response:
    """``objects-upload`` of an L0 file into the raw bucket (its arrival starts a run)."""
    return http.post(
        "/function/objects-upload",
        params={"key": raw_key(obs_id)},
        content=data,
        headers={**headers, "Content-Type": "application/fits"},
    )


def put_raw(stack: EmbeddedStack, obs_id: str, data: bytes) -> str:
    """Store an L0 file in the raw bucket without an arrival event; its ``raw/...`` ref."""
    from storage.local import LocalObjectStore

    store = LocalObjectStore(stack.data_dir / "objects")
    store.ensure_buckets()
    store.put("raw", raw_key(obs_id), data, content_type="application/fits")
    return f"raw/{raw_key(obs_id)}"


def run_of(http: httpx.Client, obs_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The run of an observation, as anyone sees it in the public runs list."""
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get("/mxt/runs", params={"obs_id": obs_id})
        assert answer.status_code == 200, answer.text
        if answer.json()["items"]:
            return answer.json()["items"][0]
        assert time.monotonic() < deadline, f"no run of {obs_id} after {timeout} s"
        time.sleep(0.05)


def wait_run(http: httpx.Client, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The run (with its tasks) once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        run = http.get(f"/mxt/runs/{run_id}").json()
        if run["state"] in TERMINAL:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']}: {run}"
        time.sleep(0.1)


def assert_clean_success(run: dict[str, Any]) -> None:
    """The run succeeded, every brick ran once, with the platform's own call id."""
    assert run["state"] == "succeeded", run
    assert run["tasks"], run
    bricks = [task["brick"] for task in run["tasks"]]
    assert len(bricks) == len(set(bricks)), bricks
    for task in run["tasks"]:
        assert task["state"] == "succeeded", task
        assert task["attempts"] == 1, task
        assert task["call_id"] == f"{run['run_id']}_{task['brick']}_1", task


def good_observation(http: httpx.Client, actors: Actors) -> dict[str, Any]:
    """Upload a good observation as the operator; its run once it has ended."""
    obs_id = new_obs_id()
    answer = upload(http, actors.operator, obs_id, fits_bytes(simulated_l0(obs_id)))
    assert answer.status_code == 201, answer.text
    return wait_run(http, run_of(http, obs_id)["run_id"])


# -- HTTP as an attacker writes it ---------------------------------------------------------


def raw_request(
    url: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes]:
    """Send ``method target`` with the request line exactly as given (no normalisation).

    ``http.client`` puts ``target`` on the wire unchanged: ``..``, ``%2e`` and ``//``
    reach the gateway as the attacker wrote them. The status and the body.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body or method not in ("GET", "HEAD"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_healthy(stack: EmbeddedStack) -> None:
    """The stack process runs, ``/healthz`` answers, every function has its replicas, and
    a public call goes through."""
    assert stack.process is not None and stack.process.poll() is None, "the stack exited"
    assert stack.healthy()
    stack.wait_functions_ready(60)
    echo = httpx.post(
        stack.url + "/function/echo", json={"message": "still here"}, timeout=REQUEST_TIMEOUT
    )
    assert echo.status_code == 200 and echo.json()["message"] == "still here", echo.text


@contextlib.contextmanager
def client(stack: EmbeddedStack) -> Any:
    """An HTTP client of the gateway without credentials (each call says its own)."""
    with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT) as http:
        yield http


def nats_by_hand(host: str, port: int, lines: list[bytes]) -> bytes:
    """Speak the NATS protocol by hand, as a hostile local process would: read INFO,
    send ``lines`` pipelined (CONNECT, PUBs, PING); the server's answer until it hangs up."""
    received = b""
    with socket.create_connection((host, port), timeout=5) as sock:
        received += sock.recv(65536)  # INFO
        sock.sendall(b"\r\n".join(lines) + b"\r\n")
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received
