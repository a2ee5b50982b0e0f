"""The ``/system`` API: auth, functions, scaling, runtime deployment, logs, topics."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter

import httpx
import nats
import yaml

from gateway.messages import CallCompleted
from local.stack import EmbeddedStack
from tests.gateway.conftest import FUNCTIONS, function_entry, wait_for


def test_system_paths_need_basic_auth(stack: EmbeddedStack, client: httpx.Client) -> None:
    for path in ("/system/functions", "/system/info", "/system/function/echo"):
        assert client.get(path).status_code == 401
        assert client.get(path, auth=("admin", "wrong")).status_code == 401
        assert client.get(path, auth=stack.auth).status_code == 200
    refused = client.get("/system/functions")
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/healthz").text == "OK"


def test_function_list_has_openfaas_shape(admin: httpx.Client) -> None:
    functions = {f["name"]: f for f in admin.get("/system/functions").json()}
    echo = functions["echo"]
    for key in ("image", "envProcess", "replicas", "availableReplicas", "invocationCount"):
        assert key in echo
    assert functions["routed-echo"]["annotations"]["com.mxt.routes"].startswith("GET ")
    info = admin.get("/system/info").json()
    assert info["provider"]["orchestration"] == "processes"
    assert admin.get("/system/function/nope").status_code == 404


def test_invocation_count_grows(admin: httpx.Client, client: httpx.Client) -> None:
    before = admin.get("/system/function/hello-python3-http").json()["invocationCount"]
    for _ in range(3):
        client.get("/function/hello-python3-http")
    after = admin.get("/system/function/hello-python3-http").json()["invocationCount"]
    assert after == before + 3


def test_logs_are_ndjson_as_faas_cli_reads_them(admin: httpx.Client, client: httpx.Client):
    client.post("/function/echo", json={"message": "for the logs"}, headers={"X-Call-Id": "lg-1"})
    lines = [json.loads(x) for x in admin.get("/system/logs?name=echo&tail=50").text.splitlines()]
    assert lines and all(set(x) >= {"name", "instance", "timestamp", "text"} for x in lines)
    assert any("lg-1" in x["text"] for x in lines)
    assert len(admin.get("/system/logs?name=echo&tail=2").text.splitlines()) == 2
    assert len(admin.get("/system/logs?name=echo&tail=-1").text.splitlines()) >= len(lines)
    assert admin.get("/system/logs").status_code == 400
    assert admin.get("/system/logs?name=echo&since=yesterday").status_code == 400


def test_scale_to_three_round_robins_then_to_zero(admin: httpx.Client, client: httpx.Client):
    assert admin.post("/system/scale-function/echo", json={"replicas": 3}).status_code == 202
    wait_for(lambda: admin.get("/system/function/echo").json()["availableReplicas"] == 3)
    ids = [f"rr-{i}" for i in range(30)]
    for call_id in ids:
        client.post("/function/echo", json={"message": "rr"}, headers={"X-Call-Id": call_id})
    served_by: dict[str, str] = {}
    for raw in admin.get("/system/logs?name=echo").text.splitlines():
        line = json.loads(raw)
        for call_id in ids:
            if f'"call_id":"x-{call_id}"' in line["text"]:
                served_by[call_id] = line["instance"]
    assert sorted(Counter(served_by.values()).values()) == [10, 10, 10]

    assert admin.post("/system/scale-function/echo", json={"replicas": 0}).status_code == 202
    assert admin.get("/system/function/echo").json()["availableReplicas"] == 0
    # a call scales it from zero again
    assert client.post("/function/echo", json={"message": "wake"}).status_code == 200
    admin.post("/system/scale-function/echo", json={"replicas": 1})
    bad = admin.post("/system/scale-function/echo", json={"replicas": "two"})
    assert bad.status_code == 400 and bad.json()["detail"]["field"] == "replicas"
    too_many = admin.post("/system/scale-function/echo", json={"replicas": 21})
    assert too_many.status_code == 400 and "0 to 20" in too_many.json()["reason"]


def test_deploy_update_delete_through_the_api(admin: httpx.Client, client: httpx.Client):
    deployment = {
        "service": "late-echo",
        "image": "x",
        "handler": str(FUNCTIONS / "echo"),
        "annotations": {"com.mxt.access": "public"},
    }
    assert admin.post("/system/functions", json=deployment).status_code == 202
    assert admin.post("/system/functions", json=deployment).status_code == 409
    resp = client.post("/function/late-echo", json={"message": "new"})
    assert resp.status_code == 200 and resp.json()["message"] == "new"
    updated = {**deployment, "handler": str(FUNCTIONS / "hello-python3-http")}
    assert admin.put("/system/functions", json=updated).status_code == 202
    assert "greeting" in client.get("/function/late-echo").json()
    deleted = admin.request("DELETE", "/system/functions", json={"functionName": "late-echo"})
    assert deleted.status_code == 202
    assert client.post("/function/late-echo", json={"message": "gone"}).status_code == 404
    missing = admin.post("/system/functions", json={"service": "no-handler"})
    assert missing.status_code == 400 and "handler" in missing.json()["reason"]
    bad_name = admin.post("/system/functions", json={**deployment, "service": "Bad_Name"})
    assert bad_name.status_code == 400


def test_function_added_to_stack_file_appears_without_restart(
    stack: EmbeddedStack, admin: httpx.Client, client: httpx.Client
) -> None:
    document = yaml.safe_load(stack.stack_file.read_text())
    original = stack.stack_file.read_text()
    document["functions"]["file-echo"] = function_entry("echo")
    stack.stack_file.write_text(yaml.safe_dump(document))
    try:
        wait_for(lambda: admin.get("/system/function/file-echo").status_code == 200)
        resp = client.post("/function/file-echo", json={"message": "from the file"})
        assert resp.status_code == 200
    finally:
        stack.stack_file.write_text(original)
    wait_for(lambda: admin.get("/system/function/file-echo").status_code == 404)


async def test_topic_connector_invokes_per_message(stack: EmbeddedStack) -> None:
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    completions = await nc.subscribe("mxt.calls.completed.topic-echo")
    try:
        await js.publish("mxt.events.test.one", json.dumps({"message": "on a stream"}).encode())
        await nc.publish("plain.test.topic", json.dumps({"message": "core nats"}).encode())
        await nc.flush()
        seen: dict[str, CallCompleted] = {}
        async with asyncio.timeout(60):
            while len(seen) < 2:
                event = CallCompleted.model_validate_json((await completions.next_msg(60)).data)
                seen[json.loads(base64.b64decode(event.body_b64))["message"]] = event
        assert set(seen) == {"on a stream", "core nats"}
        assert all(e.state == "succeeded" and e.call_id.startswith("topic-") for e in seen.values())
    finally:
        await nc.close()


def test_unknown_system_path_is_json_404(admin: httpx.Client) -> None:
    resp = admin.get("/system/nothing")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"


def test_logs_follow_streams_new_lines(stack: EmbeddedStack, client: httpx.Client) -> None:
    with (
        httpx.Client(base_url=stack.url, auth=stack.auth, timeout=30) as follower,
        follower.stream("GET", "/system/logs?name=hello-python3-http&tail=0&follow=true") as resp,
    ):
        assert resp.status_code == 200
        client.get("/function/hello-python3-http", headers={"X-Call-Id": "followed-1"})
        for raw in resp.iter_lines():
            if "followed-1" in raw:
                assert json.loads(raw)["name"] == "hello-python3-http"
                break


def test_lazy_function_starts_on_first_call(admin: httpx.Client, client: httpx.Client) -> None:
    deployment = {
        "service": "lazy-echo",
        "handler": str(FUNCTIONS / "echo"),
        "annotations": {"com.mxt.lazy": "true", "com.mxt.access": "public"},
    }
    assert admin.post("/system/functions", json=deployment).status_code == 202
    status = admin.get("/system/function/lazy-echo").json()
    assert status["replicas"] == 0 and status["availableReplicas"] == 0
    assert client.post("/function/lazy-echo", json={"message": "up"}).json()["message"] == "up"
    assert admin.get("/system/function/lazy-echo").json()["availableReplicas"] == 1
    admin.request("DELETE", "/system/functions", json={"functionName": "lazy-echo"})


def test_broken_handler_fails_fast_with_the_reason(
    admin: httpx.Client, client: httpx.Client, tmp_path_factory
) -> None:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "handler.py").write_text("import no_such_module_here\n")
    deployment = {
        "service": "broken",
        "handler": str(folder),
        "annotations": {"com.mxt.access": "public"},
    }
    assert admin.post("/system/functions", json=deployment).status_code == 202
    try:
        resp = wait_for(lambda: (r := client.post("/function/broken")).status_code == 503 and r)
        assert "no_such_module_here" in resp.json()["reason"]
    finally:
        admin.request("DELETE", "/system/functions", json={"functionName": "broken"})


async def test_topic_bindings_follow_annotation_changes(stack: EmbeddedStack) -> None:
    headers = {"Authorization": stack.auth_header}
    deployment = {
        "service": "topic-late",
        "handler": str(FUNCTIONS / "echo"),
        "annotations": {"topic": "mxt.events.late.>"},
    }
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    completions = await nc.subscribe("mxt.calls.completed.topic-late")

    async def message_reaches_function(subject: str, text: str) -> None:
        # the binding is made in the background: publish until the function sees one
        async with asyncio.timeout(60):
            while True:
                await js.publish(subject, json.dumps({"message": text}).encode())
                try:
                    event = CallCompleted.model_validate_json((await completions.next_msg(2)).data)
                except TimeoutError:
                    continue
                if json.loads(base64.b64decode(event.body_b64))["message"] == text:
                    return

    try:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers) as http:
            assert (await http.post("/system/functions", json=deployment)).status_code == 202
            await message_reaches_function("mxt.events.late.one", "first")
            changed = {**deployment, "annotations": {"topic": "mxt.storage.late"}}
            assert (await http.put("/system/functions", json=changed)).status_code == 202
            await message_reaches_function("mxt.storage.late", "second")
            consumers = [c.name for c in await js.consumers_info("MXT_EVENTS")]
            assert not any(name.startswith("topic_topic-late_") for name in consumers)
            await http.request("DELETE", "/system/functions", json={"functionName": "topic-late"})
    finally:
        await nc.close()
