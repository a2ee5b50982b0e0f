"""The OpenFaaS gateway API (``/system/*``, ``/async-function/*``, ``/healthz``).

JSON shapes follow OpenFaaS (``FunctionStatus``, ``FunctionDeployment``,
``ScaleServiceRequest``, ``logs.Message``), so faas-cli works against it. Basic auth
on ``/system/*`` is checked by the dispatcher in ``gateway.app`` before these run.
"""

from __future__ import annotations

import asyncio
import platform as host_platform
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import orjson
from nats.errors import Error as NatsError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bricks.errors import BadInput, Conflict, MxtError, NotFound, PayloadTooLarge, Transient
from gateway import messages as m
from gateway.auth import PRINCIPAL_KEY, Principal
from gateway.calls import enqueue
from gateway.deadletters import list_dead_letters, redrive
from gateway.egress import EgressPolicy
from gateway.functions import FunctionSpec
from gateway.platform import Platform
from gateway.policy import safe_subpath
from gateway.provider import Deployment
from gateway.proxy import (
    CREDENTIALS,
    HOP_BY_HOP,
    PLATFORM_HEADER_LOWER,
    PLATFORM_ONLY_PREFIX,
    namespaced_call_id,
)
from gateway.ratelimit import RateLimiter, retry_after

MAX_REPLICAS = 32
# request headers that stay with the gateway instead of travelling with an async call
_NOT_FORWARDED = HOP_BY_HOP | CREDENTIALS | {b"x-call-id", b"x-callback-url", PLATFORM_HEADER_LOWER}


def iso(timestamp: float) -> str:
    """RFC 3339 UTC time of a Unix time in seconds."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def function_status(deployment: Deployment) -> dict[str, Any]:
    """OpenFaaS ``FunctionStatus`` of a deployment (plus our ``handler``)."""
    spec = deployment.spec
    return {
        "name": spec.name,
        "image": spec.image or f"mxt/{spec.name}:local",
        "namespace": "openfaas-fn",
        "envProcess": f"python -m gateway.runtime --handler {spec.handler}",
        "envVars": spec.env,
        "constraints": [],
        "secrets": [],
        "labels": spec.labels,
        "annotations": spec.annotations,
        "limits": None,
        "requests": None,
        "readOnlyRootFilesystem": False,
        "invocationCount": deployment.invocations,
        "replicas": deployment.desired,
        "availableReplicas": len(deployment.ready),
        "createdAt": iso(deployment.created_at),
        "handler": str(spec.handler),
        "source": spec.source,
    }


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; :class:`BadInput` naming the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"request body is not JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object", field="body")
    return body


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or 400 naming what is wrong."""
    return json_object(await request.body())


def create_api(platform: Platform) -> Starlette:
    """The Starlette app of the API, bound to a platform."""
    provider = platform.provider
    callback_policy = EgressPolicy.from_setting(platform.settings.callback_allow)

    def deployment_of(name: str) -> Deployment:
        deployment = provider.deployments.get(name)
        if deployment is None:
            raise NotFound(f"no function named {name!r}", function=name)
        return deployment

    async def healthz(request: Request) -> Response:
        # 200 "OK" (text, as OpenFaaS) when every dependency is up, or the JSON report
        # when asked (Accept: application/json); 503 with the report when one is down
        report = await platform.health.report()
        healthy = report["status"] == "ok"
        wanted = "application/json" in request.headers.get("accept", "")
        if healthy and not wanted:
            return Response("OK", media_type="text/plain", headers={"Cache-Control": "no-store"})
        headers = {"Cache-Control": "no-store"}
        if not healthy:
            headers["Retry-After"] = "1"
        return JSONResponse(report, status_code=200 if healthy else 503, headers=headers)

    async def info(request: Request) -> JSONResponse:
        release = version("mxt")
        return JSONResponse(
            {
                "provider": {
                    "provider": "mxt-local",
                    "orchestration": "processes",
                    "version": {"release": release, "sha": "", "commit_message": ""},
                },
                "version": {"release": release, "sha": "", "commit_message": ""},
                "arch": host_platform.machine(),
                "stack": {
                    "file": str(platform.settings.stack_file),
                    "error": provider.stack_error,
                },
            }
        )

    async def whoami(request: Request) -> JSONResponse:
        principal: Principal = request.scope[PRINCIPAL_KEY]
        return JSONResponse({"user": principal.name, "role": principal.role.name.lower()})

    async def list_functions(request: Request) -> JSONResponse:
        return JSONResponse([function_status(d) for d in provider.deployments.values()])

    async def get_function(request: Request) -> JSONResponse:
        return JSONResponse(function_status(deployment_of(request.path_params["name"])))

    async def deploy(request: Request) -> Response:
        spec = FunctionSpec.from_deploy_request(
            await json_body(request),
            platform.settings.stack_file.resolve().parent,
            provider.deploy_roots(),
        )
        exists = spec.name in provider.deployments
        if request.method == "POST" and exists:
            raise Conflict(f"function {spec.name!r} exists; update it with PUT", function=spec.name)
        if request.method == "PUT" and not exists:
            raise NotFound(f"no function named {spec.name!r} to update", function=spec.name)
        await provider.deploy(spec)
        return Response(status_code=202)

    async def delete(request: Request) -> Response:
        body = await json_body(request)
        name = body.get("functionName")
        if not isinstance(name, str):
            raise BadInput("delete request needs the field 'functionName'", field="functionName")
        if not await provider.remove(name):
            raise NotFound(f"no function named {name!r}", function=name)
        return Response(status_code=202)

    async def scale(request: Request) -> Response:
        deployment = deployment_of(request.path_params["name"])
        replicas = (await json_body(request)).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise BadInput("field 'replicas' must be an integer", field="replicas")
        most = min(MAX_REPLICAS, deployment.spec.max_replicas)
        if not 0 <= replicas <= most:
            raise BadInput(
                f"field 'replicas' must be 0 to {most} (label com.openfaas.scale.max)",
                field="replicas",
            )
        await deployment.scale(replicas)
        return Response(status_code=202)

    async def logs(request: Request) -> StreamingResponse:
        params = request.query_params
        name = params.get("name")
        if not name:
            raise BadInput("query parameter 'name' (the function) is required", field="name")
        deployment = deployment_of(name)
        since = _parse_since(params.get("since"))
        # faas-cli sends tail=-1 for "all lines"
        tail = (
            None
            if params.get("tail", "").startswith("-")
            else _parse_int(params.get("tail"), "tail")
        )
        follow = params.get("follow", "false").lower() in ("1", "true", "yes")
        return StreamingResponse(
            _log_lines(deployment, since, tail, follow), media_type="application/x-ndjson"
        )

    async def dead_letters(request: Request) -> JSONResponse:
        limit = _parse_int(request.query_params.get("limit"), "limit") or 100
        letters = await list_dead_letters(platform.js, limit)
        return JSONResponse(
            [{"seq": seq, **letter.model_dump(mode="json")} for seq, letter in letters]
        )

    async def redrive_letter(request: Request) -> JSONResponse:
        call = await redrive(platform.js, platform.calls, request.path_params["call_id"])
        return JSONResponse(
            {"call_id": call.call_id, "function": call.function, "redrives": call.redrives},
            status_code=202,
        )

    async def call_status(request: Request) -> JSONResponse:
        call_id = request.path_params["call_id"]
        if not m.CALL_ID_PATTERN.match(call_id):  # no such key can exist: NATS would refuse it
            raise NotFound(f"no async call with id {call_id!r}", call_id=call_id)
        status = await platform.calls.get(call_id)
        if status is None:
            raise NotFound(f"no async call with id {call_id!r}", call_id=call_id)
        return JSONResponse(status.model_dump(mode="json"))

    limiter = RateLimiter(platform.settings.async_rate, platform.settings.async_burst)

    async def invoke_async(request: Request) -> Response:
        # admitted by gateway.app with the function's access level
        deployment = deployment_of(request.path_params["name"])
        principal: Principal = request.scope[PRINCIPAL_KEY]
        if not principal.platform:
            caller = principal.name if principal.authenticated else _client_address(request)
            wait = limiter.take(caller)
            if wait:
                return JSONResponse(
                    {
                        "kind": "transient",
                        "reason": f"too many async calls from {caller}: "
                        f"at most {platform.settings.async_rate:g}/s "
                        f"(bursts of {platform.settings.async_burst})",
                    },
                    status_code=429,
                    headers={"Retry-After": retry_after(wait)},
                )
        call = m.AsyncCall(
            call_id=_call_id(request, principal),
            function=deployment.spec.name,
            path=safe_subpath(_raw_subpath(request)),
            method=request.method,
            query=request.url.query,
            headers=_call_headers(request, principal),
            body_b64=m.AsyncCall.encode_body(
                await _limited_body(request, platform.settings.max_async_body_bytes)
            ),
            callback_url=await _callback_url(request, callback_policy),
        )
        # a public caller's call is in the public lane whatever its headers say
        lane = None if principal.platform else "public"
        queued = await enqueue(platform.js, platform.calls, call, lane=lane)
        headers = {"X-Call-Id": call.call_id, "X-Start-Time": str(int(call.enqueued_at * 1e9))}
        if not queued:
            headers["X-Duplicate"] = "true"
        return Response(status_code=202, headers=headers)

    async def mxt_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MxtError)
        headers = {}
        if isinstance(exc, Transient) and exc.retry_after is not None:
            headers["Retry-After"] = f"{exc.retry_after:g}"
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        reason = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
        return JSONResponse({"kind": "bad_input", "reason": reason}, status_code=exc.status_code)

    async def nats_error(request: Request, exc: Exception) -> JSONResponse:
        # NATS down or restarting: the client may try again shortly
        return await mxt_error(request, Transient(f"NATS JetStream unavailable: {exc}", 1.0))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/healthz", healthz),
        Route("/system/info", info),
        Route("/system/whoami", whoami, methods=["GET"]),
        Route("/system/functions", list_functions, methods=["GET"]),
        Route("/system/functions", deploy, methods=["POST", "PUT"]),
        Route("/system/functions", delete, methods=["DELETE"]),
        Route("/system/function/{name}", get_function),
        Route("/system/scale-function/{name}", scale, methods=["POST"]),
        Route("/system/logs", logs),
        Route("/system/dead-letters", dead_letters),
        Route("/system/dead-letters/{call_id}/redrive", redrive_letter, methods=["POST"]),
        Route("/async-function/status/{call_id}", call_status, methods=["GET"]),
        Route("/async-function/{name}", invoke_async, methods=methods),
        Route("/async-function/{name}/{path:path}", invoke_async, methods=methods),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={MxtError: mxt_error, HTTPException: http_error, NatsError: nats_error},
    )


def _parse_int(text: str | None, field: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"query parameter {field!r} must be an integer", field=field) from None
    if value < 0:
        raise BadInput(f"query parameter {field!r} must be ≥ 0", field=field)
    return value


def _parse_since(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadInput(
            f"query parameter 'since' must be an RFC 3339 time, not {text!r}", field="since"
        ) from None


async def _log_lines(
    deployment: Deployment, since: float | None, tail: int | None, follow: bool
) -> AsyncIterator[bytes]:
    name = deployment.spec.name
    queue = deployment.book.follow() if follow else None
    try:
        for line in deployment.book.tail(since, tail):
            yield line.openfaas_json(name) + b"\n"
        while queue is not None:
            try:
                line = await asyncio.wait_for(queue.get(), 15.0)
            except TimeoutError:
                continue
            yield line.openfaas_json(name) + b"\n"
    finally:
        if queue is not None:
            deployment.book.unfollow(queue)


def _call_id(request: Request, principal: Principal) -> str:
    """The async call's id: the caller's ``X-Call-Id`` in its namespace, or a new one."""
    supplied = request.headers.get("x-call-id")
    if supplied is None:
        return m.new_call_id()
    call_id = namespaced_call_id(supplied, principal)
    if not m.CALL_ID_PATTERN.match(supplied) or not m.CALL_ID_PATTERN.match(call_id):
        raise BadInput(
            "header X-Call-Id must be 1-126 characters of letters, digits, '-', '_' or '='",
            field="X-Call-Id",
        )
    return call_id


def _client_address(request: Request) -> str:
    """An anonymous caller's identity for rate limits: the client's address."""
    return f"address {request.client.host}" if request.client else "address unknown"


def _raw_subpath(request: Request) -> str:
    """The sub-path after ``/async-function/NAME`` as the client encoded it."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.decode("latin-1").split("?", 1)[0].split("/", 3)
    return parts[3] if len(parts) > 3 else ""


def _call_headers(request: Request, principal: Principal) -> dict[str, str]:
    """The request headers an async call carries to its function.

    As for a sync call (``gateway.proxy.forward_headers``): credentials stay here,
    ``X-Mxt-*`` only from the platform, the caller's name and role added.
    """
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in request.headers.raw
        if k not in _NOT_FORWARDED
        and (principal.platform or not k.startswith(PLATFORM_ONLY_PREFIX))
    }
    if not principal.platform:
        headers["X-Mxt-User"] = principal.name
        headers["X-Mxt-Role"] = principal.role.name.lower()
    return headers


async def _callback_url(request: Request, policy: EgressPolicy) -> str | None:
    """The request's ``X-Callback-Url`` if the outbound policy allows it (400 naming why not).

    The host is resolved now and again when the worker connects (``gateway.egress``).
    """
    url = request.headers.get("x-callback-url")
    if url is None:
        return None
    return await policy.check(url)


async def _limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"async request body larger than {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"async request body larger than {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
