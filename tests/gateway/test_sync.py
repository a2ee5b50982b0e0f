"""Synchronous invocation through the gateway, against real function processes."""

from __future__ import annotations

import json

import httpx

from gateway.auth import ANONYMOUS
from gateway.proxy import forward_headers


def test_echo_through_the_gateway_with_openfaas_headers(client: httpx.Client) -> None:
    resp = client.post("/function/echo/some/path", json={"message": "hello", "data": {"a": 1}})
    assert resp.status_code == 200
    assert resp.json() == {"message": "hello", "data": {"a": 1}, "path": "/some/path"}
    assert len(resp.headers["x-call-id"]) >= 32
    assert int(resp.headers["x-start-time"]) > 1_600_000_000 * 10**9
    assert float(resp.headers["x-duration-seconds"]) >= 0
    # one value per header: the runtime's own copies are replaced by the gateway's
    assert len(resp.headers.get_list("x-call-id")) == 1


def test_encoded_sub_path_and_query_pass_through(client: httpx.Client) -> None:
    resp = client.get("/function/hello-python3-http/a%20b/c", params={"name": "Zoë"})
    assert resp.json() == {"greeting": "Hello, Zoë!", "path": "/a b/c"}


def test_hop_by_hop_headers_are_not_forwarded() -> None:
    scope = {
        "headers": [
            (b"host", b"gw:8080"),
            (b"connection", b"keep-alive, X-Private"),
            (b"x-private", b"secret"),
            (b"te", b"trailers"),
            (b"content-type", b"application/json"),
            (b"x-call-id", b"client-id"),
        ],
        "client": ("10.1.2.3", 5555),
        "scheme": "http",
    }
    forwarded = dict(forward_headers(scope, "the-call", ANONYMOUS, "platform-secret"))
    assert forwarded == {
        "content-type": "application/json",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Host": "gw:8080",
        "X-Forwarded-Proto": "http",
        "X-Call-Id": "the-call",
        "X-Mxt-User": "anonymous",
        "X-Mxt-Role": "anonymous",
        "X-Mxt-Platform-Token": "platform-secret",
    }


def test_supplied_call_id_reaches_the_function(client: httpx.Client, admin: httpx.Client) -> None:
    resp = client.post("/function/echo", json={"message": "x"}, headers={"X-Call-Id": "my-id-1"})
    assert resp.status_code == 200
    # a caller's own call ids live in the x- namespace: never one the platform makes
    assert resp.headers["x-call-id"] == "x-my-id-1"
    logs = admin.get("/system/logs", params={"name": "echo"}).text
    assert '\\"call_id\\":\\"x-my-id-1\\"' in logs


def test_python3_http_handler_runs_unchanged(client: httpx.Client) -> None:
    resp = client.get("/function/hello-python3-http/greet", params={"name": "Ada"})
    assert resp.status_code == 200
    assert resp.json() == {"greeting": "Hello, Ada!", "path": "/greet"}
    assert resp.headers["x-served-by"] == "python3-http"
    post = client.post("/function/hello-python3-http", json={"name": "Grace"})
    assert post.json()["greeting"] == "Hello, Grace!"


def test_unknown_function_is_404_sync_and_async(client: httpx.Client) -> None:
    for path in ("/function/nope", "/async-function/nope"):
        resp = client.post(path, json={})
        assert resp.status_code == 404, path
        assert "nope" in resp.json()["reason"]


def test_invalid_input_is_422_naming_the_field(client: httpx.Client) -> None:
    resp = client.post("/function/echo", json={"mesage": "typo"})
    assert resp.status_code == 422
    text = json.dumps(resp.json())
    assert "message" in text and "mesage" in text


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    big = b"x" * 1_200_000  # the test stack's sync limit is 1,000,000 bytes
    resp = client.post("/function/echo", content=big)
    assert resp.status_code == 413
    assert "1000000" in resp.json()["reason"]

    def chunks():
        for _ in range(20):
            yield b"y" * 100_000

    streamed = client.post("/function/echo", content=chunks())  # chunked, no length
    assert streamed.status_code == 413
    too_big_async = client.post("/async-function/echo", content=b"z" * 150_000)
    assert too_big_async.status_code == 413


def test_the_gateway_applies_each_functions_own_body_limit(client: httpx.Client) -> None:
    """The gateway refuses exactly what the function would: its MXT_MAX_BODY_BYTES."""
    blob = "m" * 2_000_000  # over the stack's 1,000,000, under roomy-echo's 3,000,000
    passed = client.post("/function/roomy-echo", json={"message": "m", "data": {"blob": blob}})
    assert passed.status_code == 200 and len(passed.json()["data"]["blob"]) == 2_000_000
    refused = client.post("/function/roomy-echo", content=b"x" * 3_000_001)
    assert refused.status_code == 413
    # the gateway's own refusal (the function's runtime words it "exceeds the limit")
    assert refused.json()["reason"] == "request body larger than the limit of 3000000 bytes"


def test_slow_function_is_504_with_reason(client: httpx.Client) -> None:
    resp = client.post("/function/slow", json={"seconds": 3})
    assert resp.status_code == 504
    assert "within 1 s" in resp.json()["reason"]


def test_large_body_streams_both_ways(client: httpx.Client) -> None:
    message = "m" * 700_000  # above the forwarder's whole-body threshold
    resp = client.post("/function/echo", json={"message": message})
    assert resp.status_code == 200
    assert resp.json()["message"] == message


def test_write_protected_function_needs_auth(client: httpx.Client, admin: httpx.Client) -> None:
    assert client.post("/function/guarded-echo", json={"message": "x"}).status_code == 401
    assert client.post("/async-function/guarded-echo", json={"message": "x"}).status_code == 401
    assert admin.post("/function/guarded-echo", json={"message": "x"}).status_code == 200


def test_resource_routes(client: httpx.Client, admin: httpx.Client) -> None:
    got = client.get("/mxt_test/say/bonjour")
    assert got.status_code == 200
    assert got.json()["message"] == "bonjour"
    # writes need auth; the JSON body is merged with path and query parameters
    assert client.post("/mxt_test/say", json={"message": "x"}).status_code == 401
    posted = admin.post("/mxt_test/say", json={"message": "posted", "data": {"k": 2}})
    assert posted.status_code == 200
    assert posted.json()["data"] == {"k": 2}
    json_type = {"Content-Type": "application/json"}
    not_object = admin.post("/mxt_test/say", content=b"[1, 2]", headers=json_type)
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["reason"]
    # a state change with a body that does not say it is JSON (a form, a text/plain CSRF)
    untyped = admin.post("/mxt_test/say", content=b'{"message": "x"}')
    assert untyped.status_code == 415 and "Content-Type" in untyped.json()["reason"]
    unknown = client.get("/mxt_test/nothing/here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    assert client.delete("/mxt_test/say/x").status_code in (401, 405)
    assert admin.delete("/mxt_test/say/x").status_code == 405
    assert client.get("/no_such_prefix/at/all").status_code == 404
