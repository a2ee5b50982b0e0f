"""The ASGI app of one function: its handler behind ``/``, health and OpenAPI docs."""

from __future__ import annotations

import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import PLATFORM_HEADER_BYTES
from gateway.runtime.calls import QUERY_METHODS, CallRunner
from gateway.runtime.limits import RuntimeLimits
from gateway.runtime.loader import BodyKind, HandlerSpec, load_handler

BODY_METHODS = ("POST", "PUT", "PATCH")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class ErrorBody(BaseModel):
    """The body of every error response."""

    kind: str
    reason: str
    detail: dict[str, Any] | None = None
    call_id: str


class Health(BaseModel):
    """The body of ``GET /_/health``."""

    status: str
    function: str
    pid: int


def create_app(
    handler_dir: Path,
    function_name: str,
    limits: RuntimeLimits | None = None,
    platform_token: str | None = None,
) -> FastAPI:
    """The ASGI app serving the handler in ``handler_dir``.

    Parameters
    ----------
    handler_dir
        Function folder holding ``handler.py``.
    function_name
        The function's name (logs, health, OpenAPI title).
    limits
        Size, timeout and thread limits; read from the environment when omitted.
    platform_token
        When given, calls are served only with this credential in
        ``X-Mxt-Platform-Token`` (403 otherwise): only the platform calls a replica.
        Health and documentation stay open.

    Raises
    ------
    HandlerLoadError
        The handler cannot be imported or its signature fits no contract.
    ValueError
        A limit in the environment is not a positive number.
    """
    spec = load_handler(Path(handler_dir), function_name)
    limits = limits or RuntimeLimits.from_env()
    executor = ThreadPoolExecutor(limits.handler_threads, thread_name_prefix=function_name)
    runner = CallRunner(spec, function_name, limits, executor)
    app = FastAPI(title=function_name, summary=spec.summary or None, version="1")

    @app.get("/_/health", response_model=Health, tags=["runtime"])
    async def health() -> dict[str, Any]:
        """Liveness of the function process."""
        return {"status": "ok", "function": function_name, "pid": os.getpid()}

    _add_call_routes(app, spec, runner)
    app.openapi = lambda: _openapi(app, spec)  # type: ignore[method-assign]
    reserved = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(
        DirectCalls,
        runner=runner,
        reserved_paths=frozenset(reserved - {None}),
        platform_token=platform_token,
    )
    return app


class DirectCalls:
    """Answer function calls before FastAPI's routing and dependency machinery.

    The call routes registered on the app describe the API (OpenAPI, /docs); the
    requests for them are served here, because the runner already does everything a
    call needs (body, validation, errors) and FastAPI's per-request routing and
    dependency solving would about double the CPU time of a no-op call. Runtime paths
    (``/_/...``) and the documentation go on to FastAPI.

    Parameters
    ----------
    app
        The rest of the ASGI stack.
    runner
        Serves one call.
    reserved_paths
        Exact paths left to FastAPI (the documentation's).
    platform_token
        The credential every call must present (``None``: no check).
    """

    def __init__(
        self,
        app: ASGIApp,
        runner: CallRunner,
        reserved_paths: frozenset[str],
        platform_token: str | None = None,
    ) -> None:
        self.app = app
        self.runner = runner
        self.reserved_paths = reserved_paths
        self.platform_token = platform_token.encode() if platform_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a call, or pass the request on to FastAPI."""
        if (
            scope["type"] == "http"
            and scope["method"] in ALL_METHODS
            and not scope["path"].startswith("/_/")
            and scope["path"] not in self.reserved_paths
        ):
            if self.platform_token is not None and not self._from_platform(scope):
                await NOT_FROM_PLATFORM(scope, receive, send)
                return
            response = await self.runner(Request(scope, receive), scope["path"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _from_platform(self, scope: Scope) -> bool:
        assert self.platform_token is not None
        for key, value in scope["headers"]:
            if key == PLATFORM_HEADER_BYTES:
                return hmac.compare_digest(value.strip(), self.platform_token)
        return False


NOT_FROM_PLATFORM = JSONResponse(
    {
        "kind": "bad_input",
        "reason": "this replica takes calls from the platform only (through the gateway)",
        "call_id": "",
    },
    status_code=403,
)


def _add_call_routes(app: FastAPI, spec: HandlerSpec, runner: CallRunner) -> None:
    """``/`` and ``/{path}`` for every method the handler contract serves."""

    async def call_root(request: Request) -> Response:
        return await runner(request, "/")

    async def call_sub_path(request: Request, path: str) -> Response:
        return await runner(request, "/" + path)

    if spec.body_kind is BodyKind.MODEL:
        method_groups = [list(BODY_METHODS), sorted(QUERY_METHODS & set(ALL_METHODS))]
    else:
        method_groups = [list(ALL_METHODS)]
    for methods in method_groups:
        extra = _request_openapi(spec, methods[0] in QUERY_METHODS)
        for method in methods:
            for route, endpoint, where in (
                ("/", call_root, "root"),
                ("/{path:path}", call_sub_path, "sub_path"),
            ):
                app.add_api_route(
                    route,
                    endpoint,
                    methods=[method],
                    operation_id=f"{method.lower()}_{where}",
                    response_model=spec.response_model,
                    responses=_error_responses(),
                    summary=spec.summary or f"call {app.title}",
                    openapi_extra=extra,
                    tags=["function"],
                )


def _request_openapi(spec: HandlerSpec, from_query: bool) -> dict[str, Any]:
    """The OpenAPI request description of the handler's first parameter."""
    if spec.body_kind is BodyKind.MODEL and spec.request_model is not None:
        model = spec.request_model
        if from_query:
            return {"parameters": _query_parameters(model)}
        reference = {"$ref": f"#/components/schemas/{model.__name__}"}
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": reference}},
            }
        }
    media = {
        BodyKind.BYTES: "application/octet-stream",
        BodyKind.TEXT: "text/plain",
        BodyKind.OPENFAAS_EVENT: "*/*",
    }.get(spec.body_kind)
    if media is None:
        return {}
    return {
        "requestBody": {
            "required": False,
            "content": {media: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The model's fields as OpenAPI query parameters."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": field_schema}
        for name, field_schema in schema.get("properties", {}).items()
    ]


def _error_responses() -> dict[int | str, dict[str, Any]]:
    """The error statuses every call may answer, with their body."""
    return {
        status: {"model": ErrorBody, "description": description}
        for status, description in (
            (400, "bad input (malformed JSON)"),
            (413, "request body over MXT_MAX_BODY_BYTES"),
            (422, "request does not match the model, or unprocessable data"),
            (500, "unexpected error (see the function's log for the call id)"),
            (503, "transient fault: retry"),
            (504, "timed out after MXT_CALL_TIMEOUT_SECONDS"),
        )
    }


def _openapi(app: FastAPI, spec: HandlerSpec) -> dict[str, Any]:
    """FastAPI's OpenAPI document plus the request model FastAPI cannot see."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        if spec.request_model is not None:
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            model_schema = spec.request_model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            schemas.update(model_schema.pop("$defs", {}))
            schemas[spec.request_model.__name__] = model_schema
        app.openapi_schema = document
    return app.openapi_schema
