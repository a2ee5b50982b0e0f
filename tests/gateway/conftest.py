"""Fixtures of the gateway tests: a real embedded stack (nats-server from the wheel on a
free port, function processes over HTTP) serving a temporary stack file that lists
only the functions these tests need.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.stack import EmbeddedStack, write_stack_file

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "tests" / "functions"
ACCESS = "com.mxt.access"


def function_entry(handler: str, **extra: Any) -> dict[str, Any]:
    """A ``stack.yml`` entry for one of the test functions (tests/functions).

    Test functions are public unless the entry's annotations say otherwise (a
    function that declares nothing is internal to the platform).
    """
    annotations = dict(extra.pop("annotations", {}))
    if ACCESS not in annotations and "com.mxt.write" not in annotations:
        annotations[ACCESS] = "public"
    return {
        "lang": "python3-mxt",
        "handler": str(FUNCTIONS / handler),
        "annotations": annotations,
        **extra,
    }


write_stack = write_stack_file


STACK_FUNCTIONS = {
    "echo": function_entry("echo"),
    "sleep": function_entry("sleep"),
    # the same handler with a 1 s limit, for the 504 test
    "slow": function_entry("sleep", environment={"exec_timeout": "1s"}),
    "fail-n-times": function_entry("fail-n-times"),
    "hello-python3-http": function_entry("hello-python3-http"),
    "guarded-echo": function_entry("echo", annotations={"com.mxt.write": "true"}),
    "routed-echo": function_entry(
        "echo",
        annotations={
            "com.mxt.routes": "GET /mxt_test/say/{message}; POST /mxt_test/say",
            "com.mxt.access": "read=public, write=operator",
        },
    ),
    "topic-echo": function_entry(
        "echo", annotations={"topic": "mxt.events.test.>, plain.test.topic"}
    ),
    "victim": function_entry("sleep"),
    # its own body limit, above the stack's: the gateway applies the function's
    "roomy-echo": function_entry("echo", environment={"MXT_MAX_BODY_BYTES": "3000000"}),
    # called by the connector itself for each message (no async call queued)
    "topic-direct": function_entry(
        "fail-n-times",
        annotations={"topic": "mxt.events.direct.>", "com.mxt.topic-delivery": "direct"},
    ),
}

# small limits and quick retries so the tests are fast; 8 attempts at 0.3 s doubling
# outlast a replica's restart (about 1 s) by far
STACK_ENV = {
    "MXT_MAX_BODY_BYTES": str(1_000_000),
    "MXT_MAX_ASYNC_BODY_BYTES": str(100_000),
    "MXT_RETRY_BASE_DELAY": "0.3",
    "MXT_RETRY_MAX_DELAY": "5",
    "MXT_MAX_ATTEMPTS": "8",
    # the callback tests' receivers listen on loopback, refused unless listed
    "MXT_CALLBACK_ALLOW": "127.0.0.1",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """One embedded stack for the gateway tests that do not stop it."""
    root = tmp_path_factory.mktemp("gateway-stack")
    stack_file = write_stack(root / "stack.yml", STACK_FUNCTIONS)
    # API deployments may take handlers from the test's temporary folders too
    env = {**STACK_ENV, "MXT_DEPLOY_ROOTS": str(tmp_path_factory.getbasetemp())}
    with EmbeddedStack(stack_file, root / "data", env=env) as running:
        yield running


@pytest.fixture()
def client(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    """An HTTP client of the stack's gateway, without credentials."""
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        yield http


@pytest.fixture()
def admin(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    """An HTTP client of the stack's gateway with the admin's basic auth."""
    with httpx.Client(base_url=stack.url, timeout=30, auth=stack.auth) as http:
        yield http


def wait_for(predicate: Any, timeout: float = 30.0, period: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout} s: {what or predicate}")
        time.sleep(period)


def wait_call(client: httpx.Client, call_id: str, states: tuple[str, ...], timeout: float = 60):
    """Poll the async call's status until it reaches one of ``states``; the status."""

    def reached() -> dict[str, Any] | None:
        resp = client.get(f"/async-function/status/{call_id}")
        if resp.status_code == 200 and resp.json()["state"] in states:
            return resp.json()
        return None

    return wait_for(reached, timeout)
