"""OpenFaaS python3-http handlers run unchanged: event, context and response rules."""

from __future__ import annotations

import json

import pytest

from tests.runtime.conftest import FUNCTIONS, asgi_client


async def test_hello_python3_http_get_with_query():
    async with asgi_client(FUNCTIONS / "hello-python3-http", name="hello") as client:
        response = await client.get("/greet", params={"name": "SVOM"})
    assert response.status_code == 200
    assert response.json() == {"greeting": "Hello, SVOM!", "path": "/greet"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-served-by"] == "python3-http"
    assert response.headers["x-hostname"]


async def test_hello_python3_http_post_body_and_its_own_400():
    async with asgi_client(FUNCTIONS / "hello-python3-http", name="hello") as client:
        posted = await client.post("/", content=json.dumps({"name": "MXT"}))
        refused = await client.post("/", content=b"not json")
    assert posted.json()["greeting"] == "Hello, MXT!"
    assert refused.status_code == 400
    assert refused.text == "body must be JSON"
    assert refused.headers["content-type"].startswith("text/html")


RULES = """
def handle(event, context):
    shape = event.headers.get("x-shape")
    if shape == "none":
        return None
    if shape == "text":
        return "plain " + event.method
    if shape == "list-body":
        return {"statusCode": 200, "body": [1, 2]}
    if shape == "tuple":
        return ("created", 201, {"Location": "/things/1"})
    if shape == "event":
        return {"body": {
            "body": event.body.decode(), "method": event.method, "path": event.path,
            "query": event.query.get("q"), "all": event.query.getlist("q"),
            "missing": event.query.get("nope", "default"), "header": event.headers.get("X-Custom"),
        }}
    return {"statusCode": 418, "body": "<b>teapot</b>",
            "headers": {"Content-Type": "text/plain", "X-One": "1"}}
"""


@pytest.mark.parametrize(
    ("shape", "status", "body", "content_type"),
    [
        ("none", 200, b"", "text/html; charset=utf-8"),
        ("text", 200, b"plain POST", "text/html; charset=utf-8"),
        # python3-http sends str(body) for anything but a dict: a list becomes its repr
        ("list-body", 200, b"[1, 2]", "text/html; charset=utf-8"),
        ("tuple", 201, b"created", "text/html; charset=utf-8"),
        ("status", 418, b"<b>teapot</b>", "text/plain"),
    ],
)
async def test_python3_http_response_rules(write_handler, shape, status, body, content_type):
    async with asgi_client(write_handler("rules", RULES)) as client:
        response = await client.post("/", content=b"", headers={"x-shape": shape})
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == content_type
    if shape == "tuple":
        assert response.headers["location"] == "/things/1"
    if shape == "status":
        assert response.headers["x-one"] == "1"


async def test_python3_http_event_fields(write_handler):
    async with asgi_client(write_handler("rules", RULES)) as client:
        response = await client.patch(
            "/a/b",
            params=[("q", "v"), ("q", "w")],
            content=b"payload",
            headers={"x-shape": "event", "X-Custom": "yes"},
        )
    assert response.json() == {
        "body": "payload",
        "method": "PATCH",
        "path": "/a/b",
        "query": "v",  # Flask's request.args.get: the first value
        "all": ["v", "w"],
        "missing": "default",
        "header": "yes",
    }


async def test_python3_http_handler_may_raise_the_taxonomy(write_handler):
    folder = write_handler(
        "taxonomy",
        """
        from bricks.errors import NotFound
        def handle(event, context):
            raise NotFound("no such programme 'P9'")
        """,
    )
    async with asgi_client(folder) as client:
        response = await client.get("/")
    assert response.status_code == 404
    assert response.json()["reason"] == "no such programme 'P9'"


async def test_relative_imports_of_the_function_package_work(write_handler):
    folder = write_handler(
        "package",
        """
        from .greeting import greet
        def handle(event, context):
            return greet()
        """,
    )
    (folder / "greeting.py").write_text("def greet():\n    return 'hi from a sibling module'\n")
    async with asgi_client(folder) as client:
        response = await client.get("/")
    assert response.text == "hi from a sibling module"
