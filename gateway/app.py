"""The gateway's ASGI app: the OpenFaaS API, resource routes and mounted apps on one port.

Dispatch is by path prefix before any framework code runs, so the hot path
(``/function/``) costs one dict lookup before the forwarder:

- ``/function/{name}[/{path}]``: sync invocation, streamed (``gateway.proxy``);
- ``/async-function/...``, ``/system/...``, ``/healthz``: the API (``gateway.api``);
- the prefixes of :data:`MOUNTS` (websocket hub, dashboard) when their module exists;
- anything else: the resource routes of ``com.mxt.routes``, or a JSON 404.

Every request is admitted here, before it reaches a function or the API, by the
one access policy of ``gateway.policy``: the caller is identified once
(``gateway.auth``: a user's basic auth, or the platform's credential), the level the
call needs is looked up (the function's ``com.mxt.access``, or the API's rules), and
the request is refused with 401 or 403 otherwise. State-changing requests from a
browser must come from the gateway's own origin.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from bricks.errors import BadInput
from gateway import heap
from gateway.api import create_api, json_object
from gateway.auth import ANONYMOUS, PLATFORM, PLATFORM_HEADER_BYTES, PRINCIPAL_KEY, Principal
from gateway.platform import BUS_RETRY_AFTER, Platform
from gateway.policy import (
    Level,
    has_control_character,
    refusal,
    refusal_reason,
    safe_subpath,
    system_level,
)
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
#: password checks (scrypt, ~50 ms each) run in threads, this many at once
VERIFY_SLOTS = 2
#: seconds between two looks at the users file
USERS_REFRESH = 1.0


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


def _json_or_empty(scope: Scope) -> bool:
    """Whether the request's body is declared JSON, or it declares no body at all."""
    kind = header(scope, b"content-type")
    if kind is None:
        length = header(scope, b"content-length")
        return length is None or length.strip() == b"0"
    media = kind.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class GatewayApp:
    """The ASGI callable served by uvicorn; starts the :class:`Platform` in its lifespan."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.api = create_api(platform)
        self.mounts: list[tuple[str, Any]] = []
        self._verify_slots = asyncio.Semaphore(VERIFY_SLOTS)
        self._users_checked = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if has_control_character(path):
                # it would travel on as X-Forwarded-Uri: a header injection, and no path
                reason = "the request path has a control character"
                await send_json(send, 400, error_body("bad_input", reason))
            elif scope["method"] not in SAFE_METHODS and not self._same_origin(scope):
                reason = "cross-origin request refused: state changes come from this gateway"
                await send_json(send, 403, error_body("bad_input", reason))
            elif path.startswith("/function/"):
                await self.invoke(scope, receive, send, path[10:])
            elif path.startswith(API_PREFIXES) or path == "/healthz":
                await self.api_call(scope, receive, send, path)
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

    # ----------------------------------------------------------- admission

    async def principal(self, scope: Scope) -> Principal | None:
        """Who sends the request; ``None`` when it presents credentials that are wrong."""
        token = header(scope, PLATFORM_HEADER_BYTES)
        auth = self.platform.auth
        if token is not None:
            return PLATFORM if auth.is_platform(token) else None
        authorization = header(scope, b"authorization")
        if authorization is None:
            return ANONYMOUS
        now = time.monotonic()
        if now - self._users_checked > USERS_REFRESH:
            self._users_checked = now
            auth.refresh()
        known, principal = auth.cached(authorization)
        if not known:
            async with self._verify_slots:
                principal = await asyncio.to_thread(auth.verify, authorization)
        return principal

    async def admit(
        self, scope: Scope, send: Send, level: Level, what: str, platform: bool = True
    ) -> Principal | None:
        """The caller when it may make a call needing ``level``; else refused (None).

        ``platform``: whether the platform's credential may make the call (not on
        ``/system``: deploying code is the admin's, and every replica holds the token).
        """
        principal = await self.principal(scope)
        if principal is None:
            await self.refuse(scope, send, 401, "wrong user or password (or platform credential)")
            return None
        if principal.platform and not platform:
            reason = f"{what} is the admin's: the platform credential does not open it"
            await self.refuse(scope, send, 403, reason)
            return None
        status = refusal(principal, level)
        if status is not None:
            await self.refuse(scope, send, status, refusal_reason(status, level, what))
            return None
        scope[PRINCIPAL_KEY] = principal
        return principal

    async def refuse(self, scope: Scope, send: Send, status: int, reason: str) -> None:
        """401 or 403 with the reason; the Basic challenge only for clients that want it.

        The dashboard's own calls say ``X-Requested-With``: a 401 to them carries no
        ``WWW-Authenticate``, so the browser shows the app's message, not its prompt.
        """
        challenge = status == 401 and header(scope, b"x-requested-with") is None
        await send_json(
            send, status, error_body("bad_input", reason), UNAUTHORIZED_HEADERS if challenge else ()
        )

    def _same_origin(self, scope: Scope) -> bool:
        """Whether a state-changing request's ``Origin`` (if any) is the gateway itself.

        Browsers send ``Origin`` on cross-site writes; clients that are not browsers
        send none. A form or script of another site can thus not use a browser's
        remembered login to start, cancel or change anything.
        """
        origin = header(scope, b"origin")
        if origin is None:
            return True
        host = header(scope, b"host") or b""
        allowed = self.platform.settings.allowed_origins_bytes
        return origin in allowed or origin.split(b"://", 1)[-1] == host

    # ----------------------------------------------------------- dispatch

    async def api_call(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """``/system``, ``/async-function`` and ``/healthz``, admitted by the policy."""
        method = scope["method"]
        level = system_level(method, path)
        what = f"{method} {path}"
        enqueues = level is None  # an async call of a function
        if level is None:  # /async-function/{name}[/...]: the function's own access
            name = path.split("/", 3)[2]
            deployment = self.platform.provider.deployments.get(name)
            if deployment is None:
                await send_json(send, 404, error_body("bad_input", f"no function named {name!r}"))
                return
            level = deployment.spec.access.level(method)
            what = f"function {name!r}"
        platform = not path.startswith("/system/")
        if await self.admit(scope, send, level, what, platform) is None:
            return
        if enqueues and (down := self.platform.bus_down()) is not None:
            # refused at once: enqueued now, its status would land after the reconnect
            # without its message, and a retry with the same X-Call-Id be a "duplicate"
            retry = [(b"retry-after", str(BUS_RETRY_AFTER).encode())]
            await send_json(send, 503, error_body("transient", down), retry)
            return
        await self.api(scope, receive, send)

    async def invoke(self, scope: Scope, receive: Receive, send: Send, rest: str) -> None:
        """``/function/{name}[/{path}]``: forward to a replica."""
        name, _, subpath = rest.partition("/")
        raw = scope.get("raw_path")
        if raw and subpath:
            # forward the sub-path as the client encoded it (%2F, spaces, unicode)
            subpath = raw.decode("latin-1").split("?", 1)[0].split("/", 3)[3]
        deployment = self.platform.provider.deployments.get(name)
        if deployment is None:
            await send_json(send, 404, error_body("bad_input", f"no function named {name!r}"))
            return
        try:
            subpath = safe_subpath(subpath)
        except BadInput as exc:
            await send_json(send, exc.http_status, exc.to_dict())
            return
        level = deployment.spec.access.level(scope["method"])
        principal = await self.admit(scope, send, level, f"function {name!r}")
        if principal is not None:
            await self.platform.forwarder.forward(
                scope, receive, send, deployment, subpath, principal=principal
            )

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
        level = deployment.spec.access.level(method)
        principal = await self.admit(scope, send, level, f"{method} {path}")
        if principal is None:
            return
        if method not in SAFE_METHODS and not _json_or_empty(scope):
            reason = "the body of this request must be JSON (Content-Type: application/json)"
            await send_json(send, 415, error_body("bad_input", reason))
            return
        if method not in SAFE_METHODS and (down := self.platform.bus_down()) is not None:
            # a run started now could not be dispatched: refuse it rather than create it failed
            retry = [(b"retry-after", str(BUS_RETRY_AFTER).encode())]
            await send_json(send, 503, error_body("transient", down), retry)
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
            inner, receive, send, deployment, "", principal=principal, method="POST", body=body,
            extra_headers=extra,
        )  # fmt: skip

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
