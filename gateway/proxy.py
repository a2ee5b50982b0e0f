"""The hot path: forward one HTTP request to a function replica and stream the answer back.

Raw ASGI over aiohttp's pooled keep-alive client (httpx was measured at 5 % of its
speed here). Hop-by-hop headers are stripped both ways, ``X-Forwarded-*`` added, and
the OpenFaaS headers ``X-Call-Id``, ``X-Start-Time`` (Unix nanoseconds) and
``X-Duration-Seconds`` set on the response.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import orjson

from gateway.auth import PLATFORM_HEADER, Principal
from gateway.provider import Deployment, FunctionUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        # uvicorn answered the client's "100-continue" already; the function must not wait
        b"expect",
    }
)
# response headers the gateway sets itself (uvicorn adds date; the call headers are ours)
RESPONSE_OWN = HOP_BY_HOP | {
    b"date",
    b"server",
    b"x-call-id",
    b"x-start-time",
    b"x-duration-seconds",
}
# bodies up to this size are read whole (fast path); larger ones are streamed
WHOLE_BODY = 256 * 1024
CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The request body passed the gateway's limit (answered with 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than the limit of {limit} bytes")
        self.limit = limit


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Any = ()) -> None:
    """Send a whole JSON response."""
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def error_body(kind: str, reason: str, **detail: Any) -> dict[str, Any]:
    """The JSON error shape of ``bricks.errors.MxtError.to_dict``."""
    body: dict[str, Any] = {"kind": kind, "reason": reason}
    if detail:
        body["detail"] = detail
    return body


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` lower-case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def content_length(scope: Scope) -> int | None:
    """The declared ``Content-Length`` of the request, if any and valid."""
    value = header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` past ``limit`` bytes."""
    return b"".join([chunk async for chunk in stream_body(receive, limit)])


async def stream_body(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    """The request body chunk by chunk; :class:`BodyTooLarge` past ``limit`` bytes."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class ResponseAborted(Exception):
    """The function failed after its response started; the connection is dropped."""


class StreamedBody:
    """A request body sent upstream as it arrives; remembers passing the limit.

    aiohttp wraps an exception raised while it sends the body in its own error,
    so the forwarder asks this object whether the cause was the size limit.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream_body(self.receive, self.limit):
                yield chunk
        except BodyTooLarge:
            self.too_large = True
            raise


#: request headers only the platform may set; from anyone else they are dropped
PLATFORM_ONLY_PREFIX = b"x-mxt-"
#: credentials stay with the gateway: a function learns who called from X-Mxt-User/-Role
CREDENTIALS = frozenset({b"authorization", b"cookie", b"proxy-authorization"})


def forward_headers(
    scope: Scope, call_id: str, principal: Principal, platform_token: str
) -> list[tuple[str, str]]:
    """The request headers for the function.

    Hop-by-hop headers and the caller's credentials are dropped, and so are the
    ``X-Mxt-*`` headers unless the caller is the platform (a run's or task's id
    cannot be claimed from outside); ``X-Forwarded-*``, the caller's name and role
    and the platform's credential (which replicas require) are added.
    """
    dropped = HOP_BY_HOP | CREDENTIALS
    listed = header(scope, b"connection")
    if listed:  # headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1)
        dropped = dropped | {t.strip().lower() for t in listed.split(b",")}
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in scope["headers"]
        if k not in dropped
        and k != b"x-call-id"
        and (principal.platform or not k.startswith(PLATFORM_ONLY_PREFIX))
        and k != PLATFORM_HEADER_LOWER
    ]
    client = scope.get("client")
    host = header(scope, b"host")
    if client:
        headers.append(("X-Forwarded-For", client[0]))
    if host:
        headers.append(("X-Forwarded-Host", host.decode("latin-1")))
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    headers.append(("X-Call-Id", call_id))
    if not principal.platform:
        headers.append(("X-Mxt-User", principal.name))
        headers.append(("X-Mxt-Role", principal.role.name.lower()))
    headers.append((PLATFORM_HEADER, platform_token))
    return headers


def namespaced_call_id(supplied: str, principal: Principal) -> str:
    """A call id as the platform keeps it: a caller's own ids live under ``x-``.

    Only the platform chooses ids outside that namespace (``r-…`` for a run's tasks,
    ``topic-…`` for topic messages), so no outside caller can take, or collide with,
    the id of a call the platform is about to make.
    """
    return supplied if principal.platform else f"x-{supplied}"


PLATFORM_HEADER_LOWER = PLATFORM_HEADER.lower().encode()
# call ids become NATS KV keys and message ids (gateway.messages.CALL_ID_PATTERN)
_CALL_ID = re.compile(r"^[A-Za-z0-9_=\-]{1,126}$")


def call_id_of(scope: Scope, principal: Principal) -> str:
    """The call's id: the caller's ``X-Call-Id`` in its namespace, or a fresh uuid4."""
    supplied = (header(scope, b"x-call-id") or b"").decode("latin-1")
    if not supplied or not _CALL_ID.match(supplied):
        return str(uuid.uuid4())
    return namespaced_call_id(supplied, principal)


class Forwarder:
    """Forwards requests to replicas over one pooled aiohttp session.

    Parameters
    ----------
    default_timeout
        Seconds to wait for a function's answer when its spec sets none (504 beyond).
    start_timeout
        Seconds to wait for a replica of a function scaled to zero.
    platform_token
        The platform's credential, presented to every replica.
    """

    def __init__(
        self, default_timeout: float, start_timeout: float, platform_token: str
    ) -> None:
        self.platform_token = platform_token
        self.default_timeout = default_timeout
        self.start_timeout = start_timeout
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the connection pool (inside the running event loop)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self.session is not None:
            await self.session.close()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        deployment: Deployment,
        subpath: str,
        *,
        principal: Principal,
        method: str | None = None,
        body: bytes | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send the request to a replica of ``deployment`` and relay its answer.

        ``body`` replaces the request's body (resource routes build a JSON one). The
        body limit is the function's own (``MXT_MAX_BODY_BYTES`` of its environment),
        so the gateway refuses with 413 exactly what the function would.
        """
        started = time.time()
        call_id = call_id_of(scope, principal)
        name = deployment.spec.name
        limit = deployment.spec.max_body_bytes
        length = content_length(scope)
        if body is None and length is not None and length > limit:
            await self._too_large(send, call_id, limit)
            return
        try:
            if body is None:
                body = await self._request_body(receive, length, limit)
        except BodyTooLarge:
            await self._too_large(send, call_id, limit)
            return
        headers = forward_headers(scope, call_id, principal, self.platform_token)
        if extra_headers:
            headers.extend(extra_headers)
        query = scope.get("query_string", b"")
        target = "/" + subpath + ("?" + query.decode("latin-1") if query else "")
        timeout = deployment.spec.timeout or self.default_timeout
        deployment.invocations += 1
        try:
            await self._relay(
                send, deployment, method or scope["method"], target, headers, body, timeout,
                call_id, started,
            )  # fmt: skip
        except FunctionUnavailable as exc:
            await self._fail(send, 503, call_id, str(exc))
        except TimeoutError:
            await self._fail(
                send, 504, call_id, f"function {name!r} did not answer within {timeout:g} s"
            )
        except BodyTooLarge:
            await self._too_large(send, call_id, limit)
        except aiohttp.ClientError as exc:
            if isinstance(body, StreamedBody) and body.too_large:
                await self._too_large(send, call_id, limit)
                return
            await self._fail(send, 502, call_id, f"function {name!r} failed: {exc}")

    async def _request_body(self, receive: Receive, length: int | None, limit: int) -> Any:
        if length is not None and length <= WHOLE_BODY:
            return await read_body(receive, limit)
        return StreamedBody(receive, limit)

    async def _relay(
        self,
        send: Send,
        deployment: Deployment,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: Any,
        timeout: float,
        call_id: str,
        started: float,
    ) -> None:
        assert self.session is not None
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout)
        for attempt in range(2):
            replica = await deployment.pick(self.start_timeout)
            try:
                resp = await self.session.request(
                    method, replica.url + target, headers=headers, data=body,
                    timeout=client_timeout, allow_redirects=False,
                )  # fmt: skip
                break
            except aiohttp.ClientConnectorError:
                # nothing was sent: another replica (or the restarted one) may take it
                if attempt or not isinstance(body, bytes):
                    raise
        async with resp:
            out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in RESPONSE_OWN]
            out.append((b"x-call-id", call_id.encode()))
            out.append((b"x-start-time", str(int(started * 1e9)).encode()))
            out.append((b"x-duration-seconds", f"{time.time() - started:.6f}".encode()))
            whole = resp.content_length is not None and resp.content_length <= WHOLE_BODY
            if whole:
                data = await resp.read()
                out.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            if whole:
                await send({"type": "http.response.body", "body": data})
                return
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, TimeoutError) as exc:
                # headers are gone already: only dropping the connection tells the client
                raise ResponseAborted(f"function {deployment.spec.name!r}: {exc}") from exc
            await send({"type": "http.response.body", "body": b""})

    async def _too_large(self, send: Send, call_id: str, limit: int) -> None:
        await send_json(
            send,
            413,
            error_body(
                "bad_input",
                f"request body larger than the limit of {limit} bytes",
                limit=limit,
            ),
            [(b"x-call-id", call_id.encode())],
        )

    async def _fail(self, send: Send, status: int, call_id: str, reason: str) -> None:
        await send_json(
            send, status, error_body("transient", reason), [(b"x-call-id", call_id.encode())]
        )
