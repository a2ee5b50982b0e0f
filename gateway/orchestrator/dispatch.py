"""Invoking functions through the gateway: durable async calls and sync queries.

The call id of a task's dispatch is ``<run_id>_<task>_<attempt>``: derived, never
random, so that dispatching the same attempt twice (a redelivered completion, two
upstream tasks finishing at once) is deduplicated by the gateway's queue, and so that
a completion message or a log line tells which run and task it belongs to.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bricks.errors import MxtError, NotFound, Transient

CALL_ID = re.compile(r"^(?P<run>r-[a-z0-9-]+)_(?P<task>[a-z][a-z0-9-]*)_(?P<attempt>\d+)$")


def task_call_id(run_id: str, task: str, attempt: int) -> str:
    """The call id of one attempt of one task of one run."""
    return f"{run_id}_{task}_{attempt}"


@dataclass(frozen=True)
class CallRef:
    """What a task call id says: its run, task and attempt."""

    run_id: str
    task: str
    attempt: int


def parse_call_id(call_id: str | None) -> CallRef | None:
    """The run, task and attempt of a task call id; ``None`` for any other call id."""
    match = CALL_ID.match(call_id or "")
    if match is None:
        return None
    return CallRef(match["run"], match["task"], int(match["attempt"]))


class GatewayClient:
    """An HTTP client of the gateway, one per process (one connection pool).

    Parameters
    ----------
    gateway_url
        Base URL of the gateway (``MXT_GATEWAY_URL``).
    credentials
        Headers presenting the platform's credential (``gateway.auth.platform_headers``):
        the bricks are internal functions, and only the platform keeps its task call ids.
    """

    def __init__(self, gateway_url: str, credentials: dict[str, str] | None = None) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.credentials = dict(credentials or {})
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self._session

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {"Content-Type": "application/json", **extra, **self.credentials}

    async def invoke_async(
        self, function: str, body: dict[str, Any], call_id: str, headers: dict[str, str]
    ) -> None:
        """Queue a durable async call of ``function`` (202 expected).

        Raises
        ------
        NotFound
            The gateway does not know the function: no retry will help.
        Transient
            The gateway is unreachable or refused for now.
        """
        url = f"{self.gateway_url}/async-function/{function}"
        try:
            async with self._client().post(
                url,
                data=orjson.dumps(body),
                headers=self._headers({"X-Call-Id": call_id, **headers}),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"gateway unreachable for {function}: {exc}") from exc
        if status == 404:
            raise NotFound(f"function {function} is not deployed on the gateway")
        if status >= 300:
            raise Transient(f"gateway refused async call of {function}: {status} {text[:200]}")

    async def invoke(self, function: str, body: dict[str, Any]) -> Any:
        """Call ``function`` synchronously with a JSON body; its JSON answer.

        Raises
        ------
        MxtError
            The function's own classified error (status and reason kept).
        """
        url = f"{self.gateway_url}/function/{function}"
        try:
            async with self._client().post(
                url, data=orjson.dumps(body), headers=self._headers({})
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"gateway unreachable for {function}: {exc}") from exc
        if status >= 300:
            raise _error_from(function, status, payload)
        return orjson.loads(payload) if payload else None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()


def _error_from(function: str, status: int, payload: bytes) -> MxtError:
    from bricks.errors import BadInput, Unprocessable, classify_status

    try:
        reason = orjson.loads(payload).get("reason") or payload.decode()[:300]
    except (orjson.JSONDecodeError, AttributeError, UnicodeDecodeError):
        reason = payload[:300].decode(errors="replace")
    message = f"{function} answered {status}: {reason}"
    kind = classify_status(status)
    if kind == "transient":
        return Transient(message)
    if status == 404:
        return NotFound(message)
    if kind == "unprocessable":
        return Unprocessable(message)
    return BadInput(message)


class QueueDispatcher:
    """Queues brick calls straight on ``MXT_ASYNC`` with the gateway's own ``enqueue``.

    The same way into the queue as ``/async-function`` (dedupe on the call id, a status
    in ``MXT_CALL_STATUS``), without the HTTP hop through the gateway: the orchestrator
    is already connected to NATS for its events. The queue worker runs the call and
    publishes its completion exactly as for a call queued through the gateway.

    Parameters
    ----------
    nats_url
        The NATS server (``MXT_NATS_URL``).
    """

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self._nc: Any = None
        self._js: Any = None
        self._calls: Any = None
        self._lock: asyncio.Lock | None = None

    async def _queue(self) -> tuple[Any, Any]:
        """The JetStream context and call store, connected once.

        Race-free: concurrent first calls wait for the one that connects, and the
        attributes are set together only once the connection, the JetStream context
        and the status bucket are all ready (a half-initialised dispatcher used to
        fail the dispatch of a task it had just claimed).
        """
        from gateway import messages as m
        from gateway.calls import CallStore
        from gateway.natsconn import connect

        ready = self._nc is not None and not self._nc.is_closed and self._calls is not None
        if ready:
            return self._js, self._calls
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._nc is None or self._nc.is_closed or self._calls is None:
                nc = await connect(self.nats_url, reconnect_time_wait=0.2)
                try:
                    js = nc.jetstream()
                    calls = CallStore(await js.key_value(m.STATUS_BUCKET))
                except BaseException:
                    await nc.close()
                    raise
                self._js, self._calls, self._nc = js, calls, nc
        return self._js, self._calls

    async def call_status(self, call_id: str) -> Any:
        """The call's ``CallStatus`` in ``MXT_CALL_STATUS``; None when unknown (lost).

        Raises
        ------
        Transient
            NATS is unreachable.
        """
        from nats.errors import Error as NatsError

        try:
            _, calls = await self._queue()
            return await calls.get(call_id)
        except (NatsError, OSError, TimeoutError) as exc:
            raise Transient(f"cannot read the status of call {call_id}: {exc}") from exc

    async def invoke_async(
        self, function: str, body: dict[str, Any], call_id: str, headers: dict[str, str]
    ) -> None:
        """Queue a durable async call of ``function``.

        Raises
        ------
        Transient
            NATS is unreachable or JetStream did not acknowledge.
        """
        from nats.errors import Error as NatsError

        from gateway import messages as m
        from gateway.calls import enqueue

        call = m.AsyncCall(
            call_id=call_id,
            function=function,
            headers={"Content-Type": "application/json", **headers},
            body_b64=m.AsyncCall.encode_body(orjson.dumps(body)),
        )
        try:
            js, calls = await self._queue()
            await enqueue(js, calls, call)
        except (NatsError, OSError, TimeoutError) as exc:
            raise Transient(f"cannot queue {function} on NATS: {exc}") from exc

    async def close(self) -> None:
        """Drain and close the NATS connection."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
