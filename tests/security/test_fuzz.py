"""A bounded, schema-driven fuzz of every public route: 4xx for what is wrong, never 5xx.

Against a real stack of its own (``conftest.start_security_stack``: the chain's, the
persistence functions and ``echo``), with schemathesis generating requests from
OpenAPI documents, both valid ones and ones that break the schema (wrong types,
missing fields, extra fields, odd characters in paths and queries):

- each public function's own document (``/function/<name>/openapi.json``, served by its
  replica), sent to ``/function/<name>`` through the gateway, anonymously;
- the resource routes (``com.mxt.routes``): a document built here from the route table
  and each function's request model (path parameters, query parameters for reads, the
  JSON body for writes), sent anonymously and with the role the function needs;
- the gateway's own API (``/system/*``, ``/async-function/*``, ``/healthz``), written
  down here, sent anonymously, as operator and as admin.

Every answer must be below 500, within :data:`REQUEST_TIMEOUT`; the async calls the
fuzzer queued must end without a 5xx either; and the stack is healthy afterwards.

Bounded, and the same requests every run (``derandomize``: a finding reproduces):
:data:`EXAMPLES` requests per operation and generation mode, twice that for a function's
own request model (``POST /`` and ``GET /``), about a minute of requests in all.
``MXT_FUZZ_EXAMPLES=50 MXT_FUZZ_RANDOM=1`` makes a deeper run with new requests.

The 5xx answers found and not fixed yet are :data:`KNOWN`: each has a test with its exact
request (``test_known_5xx``), and the fuzzer does not count them again.

Not fuzzed: streaming reads (``follow``), which are endless by design; admin requests
that would delete or scale one of the stack's own functions; strings longer than
:data:`MAX_STRING` characters (the body and URL limits have their own tests).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway.policy import ACCESS_ANNOTATION, Level, parse_access
from local.stack import EmbeddedStack
from tests.security.conftest import (
    REQUEST_TIMEOUT,
    SECURITY_FUNCTIONS,
    Actors,
    add_actors,
    assert_healthy,
    raw_request,
    start_security_stack,
)

REPO = Path(__file__).resolve().parents[2]
#: requests per operation and generation mode
EXAMPLES = int(os.environ.get("MXT_FUZZ_EXAMPLES", "6"))
#: new requests every run instead of the same ones
RANDOM = os.environ.get("MXT_FUZZ_RANDOM") == "1"
#: the operations of a function's own document that carry its request model
MODEL_OPERATIONS = (("POST", "/"), ("GET", "/"))
#: the longest string generated (the schemas allow up to 10**6: URLs and bodies of
#: megabytes cost seconds each to generate and say nothing new)
MAX_STRING = 512
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
#: query and body fields that open a stream lasting as long as a run: never fuzzed
STREAMING = ("follow",)
ROUTE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::path)?\}")


def _declared() -> dict[str, dict[str, Any]]:
    """The stack's functions as declared (repository and test stack files)."""
    functions: dict[str, dict[str, Any]] = {}
    for path in (REPO / "stack.yml", REPO / "tests" / "stack.yml"):
        for name, spec in yaml.safe_load(path.read_text())["functions"].items():
            if name.startswith(SECURITY_FUNCTIONS):
                functions[name] = spec
    return functions


def _access(spec: dict[str, Any]) -> Any:
    annotations = spec.get("annotations") or {}
    return parse_access(
        annotations.get(ACCESS_ANNOTATION), annotations.get("com.mxt.write") == "true"
    )


DECLARED = _declared()
PUBLIC = sorted(n for n, s in DECLARED.items() if _access(s).read is Level.PUBLIC)
ROUTED = sorted(
    n for n, s in DECLARED.items() if (s.get("annotations") or {}).get("com.mxt.routes")
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    # quick retries and few attempts: a 5xx of an async call ends it within seconds
    env = {"MXT_MAX_ATTEMPTS": "2", "MXT_RETRY_BASE_DELAY": "0.2", "MXT_RETRY_MAX_DELAY": "1"}
    running = start_security_stack(tmp_path_factory.mktemp("fuzzed"), env)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def actors(stack: EmbeddedStack) -> Actors:
    actors = add_actors(stack)
    # every function answers before the fuzz starts (the lazy ones start on first call)
    for name in DECLARED:
        answer = httpx.get(
            f"{stack.url}/function/{name}/openapi.json",
            headers=actors.platform,
            timeout=REQUEST_TIMEOUT,
        )
        assert answer.status_code == 200, (name, answer.text)
    stack.wait_functions_ready(60)
    return actors


# -- the fuzzer --------------------------------------------------------------------------


@dataclass
class Finding:
    """A request answered with a 5xx, or not answered in time."""

    who: str
    request: str
    outcome: str

    def __str__(self) -> str:
        return f"[{self.who}] {self.request}\n    -> {self.outcome}"


@dataclass
class Fuzzed:
    """What a fuzz run sent and found; the async calls it queued."""

    sent: int = 0
    findings: list[Finding] | None = None
    queued: list[str] | None = None

    def __post_init__(self) -> None:
        self.findings = []
        self.queued = []


def bounded(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with long strings capped and the streaming fields removed."""
    document = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("maxLength"), int) and node["maxLength"] > MAX_STRING:
                node["maxLength"] = MAX_STRING
            if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
                node["maxLength"] = MAX_STRING
            properties = node.get("properties")
            if isinstance(properties, dict):
                for name in STREAMING:
                    properties.pop(name, None)
                if isinstance(node.get("required"), list):
                    node["required"] = [r for r in node["required"] if r not in STREAMING]
            parameters = node.get("parameters")
            if isinstance(parameters, list):
                node["parameters"] = [
                    p
                    for p in parameters
                    if not (isinstance(p, dict) and p.get("name") in STREAMING)
                ]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return document


def fuzz(
    document: dict[str, Any],
    base_url: str,
    who: str,
    headers: dict[str, str],
    fuzzed: Fuzzed,
    allowed: Callable[[Any], bool] = lambda case: True,
    examples: Callable[[Any], int] = lambda operation: EXAMPLES,
) -> Fuzzed:
    """Send generated requests for every operation of ``document`` to ``base_url``."""
    schema = schemathesis.openapi.from_dict(bounded(document))
    assert fuzzed.findings is not None and fuzzed.queued is not None
    findings, queued = fuzzed.findings, fuzzed.queued
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in MODES:

                @settings(
                    max_examples=examples(operation),
                    deadline=None,
                    database=None,
                    derandomize=not RANDOM,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def send(case: Any) -> None:
                    if not allowed(case):
                        return
                    fuzzed.sent += 1
                    try:
                        response = case.call(
                            base_url=base_url,
                            session=session,
                            headers=headers,
                            timeout=REQUEST_TIMEOUT,
                            allow_redirects=False,
                        )
                    except requests.RequestException as exc:
                        request = case.as_curl_command(base_url=base_url)
                        findings.append(Finding(who, request, f"no answer: {exc!r}"))
                        return
                    if response.status_code >= 500:
                        request = case.as_curl_command(base_url=base_url)
                        body = response.content[:300].decode("utf-8", "replace")
                        findings.append(Finding(who, request, f"{response.status_code} {body}"))
                    elif response.status_code == 202 and "x-call-id" in response.headers:
                        call_id = response.headers["x-call-id"]
                        queued.append(call_id[0] if isinstance(call_id, list) else call_id)

                # no request breaks the schema of an operation without parameters
                with contextlib.suppress(Unsatisfiable):
                    send()
    return fuzzed


# -- what was found and is not fixed yet ---------------------------------------------------

_CONTROL_IN_PATH = re.compile(r"^curl .*?https?://[^/ ]+/[^?' ]*%(?:[01][0-9A-Fa-f]|7[Ff])")


@dataclass(frozen=True)
class Known:
    """A 5xx the fuzzer found: the exact request, and how to recognise its kind."""

    name: str
    method: str
    target: str
    reason: str
    matches: Callable[[Finding], bool]
    out_of_scope: bool


KNOWN = (
    Known(
        "runs-obs-id-pattern",
        "GET",
        "/mxt/runs?obs_id=-x",
        "orchestrator-runs: an obs_id that missiondb's filter pattern refuses raises a "
        "pydantic ValidationError in views.list_runs (500) instead of a 422 "
        "(RunQuery.obs_id has no pattern); the '4xx never 5xx' issue",
        lambda f: (
            ("orchestrator-runs" in f.request or "/mxt/runs" in f.request)
            and "obs_id" in f.request
            and f.outcome.startswith("500 {")
        ),
        out_of_scope=False,
    ),
    Known(
        "status-invalid-key",
        "GET",
        "/async-function/status/a%20b",
        "GET /async-function/status/{id} with an id NATS KV refuses (space, '*', '>', "
        "non-ASCII) answers 503 'NATS JetStream unavailable: InvalidKeyError' with "
        "Retry-After instead of 400/404 (gateway/api.py call_status does not check the id "
        "against CALL_ID_PATTERN); the '4xx never 5xx' issue",
        lambda f: "/async-function/status/" in f.request and "InvalidKeyError" in f.outcome,
        out_of_scope=False,
    ),
    Known(
        "route-path-control-character",
        "GET",
        "/mxt/runs/r-x%0D%0AX-Mxt-Run-Id:%20r-forged",
        "a resource route's decoded path goes into the X-Forwarded-Uri header "
        "(gateway/app.py resource): a control character in it makes aiohttp refuse the "
        "header ('Potential header injection attack') and the gateway answers a plain "
        "500; test_attacks.py test_a_header_injected_through_a_resource_path_is_refused",
        lambda f: (
            f.outcome.startswith("500 Internal Server Error")
            and _CONTROL_IN_PATH.match(f.request) is not None
        ),
        out_of_scope=False,
    ),
)


def _unknown(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not any(known.matches(f) for known in KNOWN)]


@pytest.mark.parametrize(
    "known",
    [
        pytest.param(k, id=k.name, marks=pytest.mark.xfail(strict=True, reason=k.reason))
        if k.out_of_scope
        else pytest.param(k, id=k.name)
        for k in KNOWN
    ],
)
def test_known_5xx(stack: EmbeddedStack, actors: Actors, known: Known) -> None:
    """Each 5xx found so far, sent exactly: a 4xx once it is fixed."""
    status, body = raw_request(stack.url, known.method, known.target)
    assert status < 500, f"{known.method} {known.target} -> {status} {body[:300]!r}: {known.reason}"


def _assert_nothing_found(fuzzed: Fuzzed) -> None:
    """No 5xx and no hang, but those of :data:`KNOWN` (tested on their own)."""
    assert fuzzed.sent > 0
    assert fuzzed.findings is not None
    found = _unknown(fuzzed.findings)
    listed = "\n".join(str(f) for f in found[:30])
    assert not found, f"{len(found)} of {fuzzed.sent} requests:\n{listed}"


# -- 1. each public function's own document --------------------------------------------


@pytest.mark.parametrize("name", PUBLIC)
def test_public_function_documents(stack: EmbeddedStack, actors: Actors, name: str) -> None:
    answer = httpx.get(f"{stack.url}/function/{name}/openapi.json", timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200, answer.text
    base = f"{stack.url}/function/{name}"

    def examples(operation: Any) -> int:
        model = (operation.method.upper(), operation.path) in MODEL_OPERATIONS
        return 2 * EXAMPLES if model else max(1, EXAMPLES // 2)

    _assert_nothing_found(fuzz(answer.json(), base, "anonymous", {}, Fuzzed(), examples=examples))


# -- 2. the resource routes --------------------------------------------------------------


def _request_model(document: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of the function's request model, from its own document."""
    body = document["paths"]["/"]["post"].get("requestBody") or {}
    schema = body.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    name = schema["$ref"].rsplit("/", 1)[-1]
    return copy.deepcopy(document["components"]["schemas"][name])


def route_document(name: str, routes: list[tuple[str, str]], function_doc: dict[str, Any]) -> dict:
    """An OpenAPI document of the resource routes of one function.

    Path parameters come from the template (typed by the model's field of that name),
    the other fields of the request model are query parameters of reads and the JSON
    body of writes, as ``gateway.app`` merges them.
    """
    model = _request_model(function_doc) or {"type": "object"}
    fields = model.get("properties", {})
    required = set(model.get("required", []))
    paths: dict[str, dict[str, Any]] = {}
    for method, template in routes:
        in_path = ROUTE_PARAM.findall(template)
        path = ROUTE_PARAM.sub(lambda m: "{" + m.group(1) + "}", template)
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": fields.get(p, {"type": "string"})}
            for p in in_path
        ]
        operation: dict[str, Any] = {"responses": {"default": {"description": "any"}}}
        rest = {k: v for k, v in fields.items() if k not in in_path}
        if method == "GET":
            parameters += [
                {"name": k, "in": "query", "required": k in required, "schema": v}
                for k, v in rest.items()
                if v.get("type") in ("string", "integer", "number", "boolean")
                or "anyOf" in v
                or "$ref" in v
            ]
        else:
            body = dict(model, properties=rest)
            body["required"] = [r for r in required if r not in in_path]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        operation["parameters"] = parameters
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"routes of {name}", "version": "1"},
        "paths": paths,
        "components": function_doc.get("components", {}),
    }


@pytest.mark.parametrize("name", ROUTED)
def test_resource_routes(stack: EmbeddedStack, actors: Actors, name: str) -> None:
    from gateway.platform import load_stack_specs

    spec = next(s for s in load_stack_specs(stack.stack_file) if s.name == name)
    function_doc = httpx.get(
        f"{stack.url}/function/{name}/openapi.json", headers=actors.admin, timeout=REQUEST_TIMEOUT
    ).json()
    document = route_document(name, [tuple(r) for r in spec.routes], function_doc)
    fuzzed = Fuzzed()
    callers = {"anonymous": actors.anonymous}
    level = max(spec.access.read, spec.access.write)
    if level is not Level.PUBLIC:
        callers[level.label] = actors.operator if level is Level.OPERATOR else actors.admin
    for who, headers in callers.items():
        fuzz(document, stack.url, who, headers, fuzzed)
    _assert_nothing_found(fuzzed)


# -- 3. the gateway's own API ---------------------------------------------------------------

_ANY_JSON = {"content": {"application/json": {"schema": {}}}}
_DEPLOYMENT = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "handler": {"type": "string"},
        "image": {"type": "string"},
        "envVars": {"type": "object", "additionalProperties": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["service", "handler"],
}


def _operation(
    parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "parameters": parameters or [],
        "responses": {"default": {"description": "any"}},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _header(name: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}


def gateway_document() -> dict[str, Any]:
    """The gateway's API (``gateway/api.py``) as an OpenAPI document."""
    function = {"type": "string", "enum": PUBLIC}
    async_headers = [_header("X-Call-Id"), _header("X-Callback-Url")]
    async_call = _operation([_path("name", function), *async_headers], {})
    async_sub = _operation([_path("name", function), _path("path"), *async_headers], {})
    logs = [
        _query("name", {"type": "string"}),
        _query("since", {"type": "string"}),
        _query("tail", {"type": "string"}),
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "mxt gateway", "version": "1"},
        "paths": {
            "/healthz": {"get": _operation()},
            "/system/info": {"get": _operation()},
            "/system/whoami": {"get": _operation()},
            "/system/functions": {
                "get": _operation(),
                "post": _operation(body=_DEPLOYMENT),
                "put": _operation(body=_DEPLOYMENT),
                "delete": _operation(
                    body={"type": "object", "properties": {"functionName": {"type": "string"}}}
                ),
            },
            "/system/function/{name}": {"get": _operation([_path("name")])},
            "/system/scale-function/{name}": {
                "post": _operation(
                    [_path("name")],
                    {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                )
            },
            "/system/logs": {"get": _operation(logs)},
            "/system/dead-letters": {"get": _operation([_query("limit", {"type": "string"})])},
            "/system/dead-letters/{call_id}/redrive": {"post": _operation([_path("call_id")])},
            "/async-function/status/{call_id}": {"get": _operation([_path("call_id")])},
            "/async-function/{name}": {"post": async_call, "put": async_call},
            "/async-function/{name}/{path}": {"post": async_sub, "get": async_sub},
        },
    }


def _harmless(existing: set[str]) -> Callable[[Any], bool]:
    """Whether a generated case leaves the stack's own functions alone."""

    def allowed(case: Any) -> bool:
        body = case.body if isinstance(case.body, dict) else {}
        named = [body.get("functionName"), body.get("service")]
        named.append((case.path_parameters or {}).get("name"))
        names = {name for name in named if isinstance(name, str)}
        writes = case.method.upper() != "GET" and case.operation.path.startswith("/system/")
        return not (writes and names & existing)

    return allowed


@pytest.mark.parametrize("who", ["anonymous", "scientist", "operator", "admin"])
def test_gateway_api(stack: EmbeddedStack, actors: Actors, who: str) -> None:
    existing = {f["name"] for f in stack.functions()}
    fuzzed = fuzz(
        gateway_document(), stack.url, who, getattr(actors, who), Fuzzed(), _harmless(existing)
    )
    # the async calls it queued end too, and none with a 5xx of its function
    assert fuzzed.queued is not None and fuzzed.findings is not None
    deadline = time.monotonic() + 60
    for call_id in fuzzed.queued:
        while True:
            status = httpx.get(
                f"{stack.url}/async-function/status/{call_id}", timeout=REQUEST_TIMEOUT
            ).json()
            if status["state"] in ("succeeded", "failed", "dead"):
                break
            if time.monotonic() > deadline:
                fuzzed.findings.append(
                    Finding(who, f"async call {call_id}", f"unfinished: {status}")
                )
                break
            time.sleep(0.1)
        if (status.get("status_code") or 0) >= 500:
            fuzzed.findings.append(Finding(who, f"async call {call_id}", json.dumps(status)))
    _assert_nothing_found(fuzzed)
    assert {f["name"] for f in stack.functions()} == existing


def test_the_stack_is_healthy_after_the_fuzz(stack: EmbeddedStack, actors: Actors) -> None:
    assert_healthy(stack)
    for name in DECLARED:
        answer = httpx.get(
            f"{stack.url}/function/{name}/_/health",
            headers=actors.platform,
            timeout=REQUEST_TIMEOUT,
        )
        assert answer.status_code == 200, (name, answer.text)
