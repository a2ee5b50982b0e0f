"""The gateway's ASGI app: the OpenFaaS API, resource routes and mounted apps on one port.

Dispatch is by path prefix before any framework code runs, so the hot path
(``/function/``) costs one dict lookup before the forwarder:

- ``/function/{name}[/{path}]``: sync invocation, streamed (``gateway.proxy``);
- ``/async-function/...``, ``/system/...``, ``/healthz``: the API (``gateway.api``),
  basic auth on every ``/system/`` path;
- the prefixes of :data:`MOUNTS` (websocket hub, dashboard) when their module exists;
- anything else: the resource routes of ``com.mxt.routes``, or a JSON 404.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any
from urllib.parse import parse_qs

import orjson

from bricks.errors import BadInput
from gateway import heap
from gateway.api import create_api, json_object
from gateway.platform import Platform
from gateway.proxy import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    error_body,
    header,
    read_body,
    send_json,
)

log = logging.getLogger("mxt.gateway")

# (prefix, "module:factory"): ASGI apps of other parts, mounted when importable. The
# factory is called with the keywords it declares among ``settings`` (GatewaySettings),
# ``nats_url`` (str) and ``nc`` (the gateway's NATS connection); mounted apps get no
# lifespan events, so they open their clients lazily.
MOUNTS: tuple[tuple[str, str], ...] = (
    ("/mxt_websocket", "gateway.hub:create_app"),
    ("/ui", "gateway.dashboard:create_app"),
)
API_PREFIXES = ("/system/", "/async-function/")
UNAUTHORIZED_HEADERS = [(b"www-authenticate", b'Basic realm="mxt"')]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def load_mount(target: str, kwargs: dict[str, Any]) -> Any | None:
    """The ASGI app built by ``module:factory``, or ``None`` when the module is absent."""
    module_name, _, factory_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    factory = getattr(module, factory_name)
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in kwargs.items() if k in accepted})


class GatewayApp:
    """The ASGI callable served by uvicorn; starts the :class:`Platform` in its lifespan."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.api = create_api(platform)
        self.mounts: list[tuple[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/function/"):
                await self.invoke(scope, receive, send, path[10:])
            elif path.startswith(API_PREFIXES) or path == "/healthz":
                if path.startswith("/system/") and not self._authorised(scope):
                    await self.unauthorised(send)
                    return
                await self.api(scope, receive, send)
            elif (mounted := self._mounted(scope)) is not None:
                await mounted(self._mount_scope(scope), receive, send)
            else:
                await self.resource(scope, receive, send)
        elif kind == "websocket":
            mounted = self._mounted(scope)
            if mounted is None:
                await send({"type": "websocket.close", "code": 1008, "reason": "no such path"})
                return
            await mounted(self._mount_scope(scope), receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    def _authorised(self, scope: Scope) -> bool:
        return self.platform.auth.allows(header(scope, b"authorization"))

    async def unauthorised(self, send: Send) -> None:
        """401 with the reason and the Basic challenge."""
        await send_json(
            send,
            401,
            error_body("bad_input", "basic auth required: user admin, the gateway's password"),
            UNAUTHORIZED_HEADERS,
        )

    async def invoke(self, scope: Scope, receive: Receive, send: Send, rest: str) -> None:
        """``/function/{name}[/{path}]``: forward to a replica."""
        name, _, subpath = rest.partition("/")
        raw = scope.get("raw_path")
        if raw and subpath:
            # forward the sub-path as the client encoded it (%2F, spaces, unicode)
            subpath = raw.decode("latin-1").split("/", 3)[3]
        deployment = self.platform.provider.deployments.get(name)
        if deployment is None:
            await send_json(send, 404, error_body("bad_input", f"no function named {name!r}"))
            return
        if deployment.spec.write_protected and not self._authorised(scope):
            await self.unauthorised(send)
            return
        await self.platform.forwarder.forward(scope, receive, send, deployment, subpath)

    async def resource(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A ``com.mxt.routes`` path: invoke its function with the merged JSON body."""
        method, path = scope["method"], scope["path"]
        match = self.platform.routes.match(method, path)
        if match.route is None:
            if match.allowed_methods:
                allow = ", ".join(match.allowed_methods).encode()
                reason = f"{method} not allowed on {path}"
                await send_json(send, 405, error_body("bad_input", reason), [(b"allow", allow)])
            else:
                await send_json(send, 404, error_body("bad_input", f"no route for {path}"))
            return
        deployment = self.platform.provider.deployments.get(match.route.function)
        if deployment is None:  # removed between the table's rebuild and now
            reason = f"function {match.route.function!r} of {path} is not deployed"
            await send_json(send, 503, error_body("transient", reason))
            return
        needs_auth = method not in SAFE_METHODS or deployment.spec.write_protected
        if needs_auth and not self._authorised(scope):
            await self.unauthorised(send)
            return
        try:
            body = await self._merged_body(scope, receive, match.params)
        except BodyTooLarge as exc:
            await send_json(send, 413, error_body("bad_input", str(exc), limit=exc.limit))
            return
        except BadInput as exc:
            await send_json(send, exc.http_status, exc.to_dict())
            return
        headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
        ]
        headers.append((b"content-type", b"application/json"))
        inner = dict(scope, headers=headers, query_string=b"")
        extra = [("X-Forwarded-Method", method), ("X-Forwarded-Uri", path)]
        await self.platform.forwarder.forward(
            inner, receive, send, deployment, "", method="POST", body=body, extra_headers=extra
        )

    async def _merged_body(self, scope: Scope, receive: Receive, params: dict[str, str]) -> bytes:
        """Path parameters over query parameters over the request's JSON object."""
        raw = await read_body(receive, self.platform.settings.max_body_bytes)
        merged: dict[str, Any] = json_object(raw) if raw.strip() else {}
        for key, values in parse_qs(scope.get("query_string", b"").decode("latin-1")).items():
            merged[key] = values[0] if len(values) == 1 else values
        merged.update(params)
        return orjson.dumps(merged)

    def _mounted(self, scope: Scope) -> Any | None:
        path = scope["path"]
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return app
        return None

    def _mount_scope(self, scope: Scope) -> Scope:
        path = scope["path"]
        for prefix, _ in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                # Starlette's convention: full path kept, the prefix moves to root_path
                return dict(
                    scope,
                    path=path if path != prefix else prefix + "/",
                    root_path=scope.get("root_path", "") + prefix,
                )
        return scope

    def load_mounts(self) -> None:
        """Build the apps of :data:`MOUNTS` whose modules exist."""
        kwargs = {
            "settings": self.platform.settings,
            "nats_url": self.platform.settings.nats_url,
            "nc": self.platform.nc,
        }
        for prefix, target in MOUNTS:
            try:
                app = load_mount(target, kwargs)
            except Exception:  # noqa: BLE001 - a broken part must not take the gateway down
                log.exception("cannot mount %s at %s", target, prefix)
                continue
            if app is not None:
                self.mounts.append((prefix, app))

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Start the platform on startup, drain it on shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.platform.start()
                    self.load_mounts()
                    heap.settle()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.platform.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
