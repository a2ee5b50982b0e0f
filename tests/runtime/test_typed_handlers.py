"""Typed handlers through the ASGI app: bodies, models, statuses, OpenAPI, health."""

from __future__ import annotations

import os

from tests.runtime.conftest import FUNCTIONS, asgi_client

TYPED = """
from __future__ import annotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import PlainTextResponse

SUCCESS_STATUS = 201

class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str
    quantity: int = Field(ge=1)
    tags: list[str] = []

class Receipt(BaseModel):
    item: str
    total: int
    tags: list[str]
    path: str
    method: str

def handle(request: Order, context) -> Receipt:
    if request.item == "plain":
        return PlainTextResponse("as is", status_code=202)
    return Receipt(item=request.item, total=request.quantity * 3, tags=request.tags,
                   path=context.path, method=context.method)
"""


async def test_typed_success_returns_model_with_success_status(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post("/", json={"item": "lens", "quantity": 4})
    assert response.status_code == 201
    assert response.json() == {
        "item": "lens",
        "total": 12,
        "tags": [],
        "path": "/",
        "method": "POST",
    }
    assert response.headers["content-type"] == "application/json"
    assert float(response.headers["x-duration-seconds"]) >= 0
    assert len(response.headers["x-call-id"]) == 32


async def test_sub_path_and_caller_call_id_reach_the_handler(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.put(
            "/orders/7", json={"item": "x", "quantity": 1}, headers={"X-Call-Id": "c-42"}
        )
    assert response.json()["path"] == "/orders/7"
    assert response.json()["method"] == "PUT"
    assert response.headers["x-call-id"] == "c-42"


async def test_get_maps_query_parameters_to_the_model(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.get("/q", params=[("item", "a"), ("quantity", "2")])
        repeated = await client.get(
            "/", params=[("item", "a"), ("quantity", "1"), ("tags", "x"), ("tags", "y")]
        )
        invalid = await client.get("/", params={"item": "a", "quantity": "zero"})
    assert response.status_code == 201
    assert response.json()["total"] == 6
    assert response.json()["method"] == "GET"
    assert repeated.json()["tags"] == ["x", "y"]
    assert invalid.status_code == 422
    assert invalid.json()["detail"]["errors"][0]["loc"] == "quantity"


async def test_starlette_response_is_sent_as_is(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post("/", json={"item": "plain", "quantity": 1})
    assert response.status_code == 202
    assert response.text == "as is"


async def test_invalid_field_is_422_naming_each_field(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post("/", json={"item": "lens", "quantity": 0, "colour": "red"})
    assert response.status_code == 422
    body = response.json()
    assert body["kind"] == "bad_input"
    assert body["call_id"] == response.headers["x-call-id"]
    failing = {error["loc"]: error["type"] for error in body["detail"]["errors"]}
    assert failing == {"quantity": "greater_than_equal", "colour": "extra_forbidden"}
    assert "quantity" in body["reason"] and "colour" in body["reason"]


async def test_missing_body_lists_required_fields(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post("/")
    assert response.status_code == 422
    assert {e["loc"] for e in response.json()["detail"]["errors"]} == {"item", "quantity"}


async def test_malformed_json_is_400_saying_so(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post(
            "/", content=b'{"item": "lens",', headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["kind"] == "bad_input"
    assert response.json()["reason"].startswith("malformed JSON body")


async def test_json_that_is_not_an_object_is_422(write_handler):
    async with asgi_client(write_handler("order", TYPED)) as client:
        response = await client.post("/", json=[1, 2])
    assert response.status_code == 422
    assert response.json()["detail"]["errors"][0]["loc"] == "body"


async def test_bytes_and_text_handlers_get_the_raw_body(write_handler):
    raw = write_handler(
        "raw",
        """
        import hashlib
        def handle(request: bytes) -> bytes:
            return hashlib.sha256(request).digest()
        """,
    )
    text = write_handler(
        "text",
        """
        async def handle(request: str, context):
            return {"upper": request.upper(), "function": context.function}
        """,
    )
    payload = os.urandom(5000)
    async with asgi_client(raw) as client:
        digest = await client.post("/", content=payload)
    async with asgi_client(text, name="shout") as client:
        shouted = await client.post("/", content="héllo".encode())
        not_utf8 = await client.post("/", content=b"\xff\xfe")
    import hashlib

    assert digest.status_code == 200
    assert digest.content == hashlib.sha256(payload).digest()
    assert digest.headers["content-type"] == "application/octet-stream"
    assert shouted.json() == {"upper": "HÉLLO", "function": "shout"}
    assert not_utf8.status_code == 400
    assert "UTF-8" in not_utf8.json()["reason"]


async def test_sync_handler_runs_in_a_thread_with_the_call_context(write_handler, json_log_lines):
    folder = write_handler(
        "threaded",
        """
        import threading
        def handle(request: bytes, context):
            context.log.info("working", extra={"size": len(request)})
            return {"thread": threading.current_thread().name}
        """,
    )
    async with asgi_client(folder, name="threaded") as client:
        response = await client.post("/", content=b"abc", headers={"X-Call-Id": "t-1"})
    assert response.json()["thread"].startswith("threaded")
    import json

    lines = [json.loads(line) for line in json_log_lines()]
    working = [line for line in lines if line["message"] == "working"]
    assert working and working[0]["call_id"] == "t-1" and working[0]["size"] == 3


async def test_health_reports_function_and_pid():
    async with asgi_client(FUNCTIONS / "echo", name="echo") as client:
        response = await client.get("/_/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "function": "echo", "pid": os.getpid()}


async def test_openapi_shows_request_and_response_models():
    async with asgi_client(FUNCTIONS / "echo", name="echo") as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    schemas = document["components"]["schemas"]
    assert set(schemas["EchoRequest"]["properties"]) == {"message", "data"}
    assert schemas["EchoRequest"]["required"] == ["message"]
    assert set(schemas["EchoResponse"]["properties"]) == {"message", "data", "path"}
    post = document["paths"]["/"]["post"]
    request_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema == {"$ref": "#/components/schemas/EchoRequest"}
    ok_schema = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok_schema == {"$ref": "#/components/schemas/EchoResponse"}
    assert {p["name"] for p in document["paths"]["/"]["get"]["parameters"]} == {"message", "data"}
    assert "/{path}" in document["paths"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
