"""One call of a handler: request → argument → handler → response, errors classified.

A synchronous handler runs in a worker thread. When its call times out, the caller gets
its 504 at once, but a thread cannot be stopped: if the handler is still running
``MXT_ABANDON_GRACE_SECONDS`` after the 504 was sent, the runtime process
(``python -m gateway.runtime``) logs one error line (function, call id, seconds) and
stops itself with SIGTERM: uvicorn stops accepting calls, lets the others in flight
finish (``--graceful-seconds``), and the process ends by the signal, without waiting
for the stuck thread. The local provider restarts it, as Kubernetes restarts an
OpenFaaS container. An app served inside another process (tests, an ASGI client) only
logs the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import os
import signal
import sys
import time
import uuid
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from bricks.errors import BadInput, MxtError, Transient
from gateway.runtime.context import Context
from gateway.runtime.limits import RuntimeLimits, read_body
from gateway.runtime.loader import BodyKind, HandlerSpec
from gateway.runtime.logs import CallLogger, call_fields
from gateway.runtime.openfaas import Event, FlaskQuery, openfaas_response

log = logging.getLogger("mxt.runtime")

# Methods whose typed request comes from the query string rather than the body.
QUERY_METHODS = frozenset({"GET", "DELETE", "HEAD"})
# Watches of handlers abandoned by a timed-out call (a reference keeps each task alive).
_WATCHES: set[asyncio.Task[None]] = set()
# Whether this process has already asked itself to stop (one line, one signal).
_STOPPING = False


def serving_process() -> bool:
    """Whether this process is a runtime replica (``python -m gateway.runtime``).

    Only such a process stops itself for an abandoned handler; an app embedded in
    another process (a test, an in-process ASGI client) must not end its host.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "gateway.runtime.__main__"


@dataclass
class _Worker:
    """The executor future of one call's synchronous handler (``None`` until started)."""

    future: Future[Any] | None = field(default=None)


class InvalidRequest(BadInput):
    """The request body or query does not match the handler's request model (422)."""

    http_status = 422


@dataclass(frozen=True)
class CallRunner:
    """Serves calls of one loaded handler.

    Parameters
    ----------
    spec
        The loaded handler.
    function
        The function's name.
    limits
        Request size, timeout and thread limits.
    executor
        Where synchronous handlers run.
    """

    spec: HandlerSpec
    function: str
    limits: RuntimeLimits
    executor: Executor

    @property
    def function_log(self) -> logging.Logger:
        """The logger of the function's own messages (``context.log``)."""
        return logging.getLogger(f"mxt.function.{self.function}")

    async def __call__(self, request: Request, path: str) -> Response:
        """Serve one call, whatever happens, with ``X-Call-Id`` and ``X-Duration-Seconds``."""
        started = time.perf_counter()
        headers = request.headers
        call_id = headers.get("x-call-id") or uuid.uuid4().hex
        fields = {"call_id": call_id}
        for header, key in (("x-mxt-run-id", "run_id"), ("x-mxt-task-id", "task_id")):
            if header in headers:
                fields[key] = headers[header]
        token = call_fields.set(fields)
        try:
            response = await self._respond(request, path, call_id)
            duration = time.perf_counter() - started
            response.headers["x-call-id"] = call_id
            response.headers["x-duration-seconds"] = f"{duration:.6f}"
            log.log(
                _log_level(response.status_code),
                "call finished",
                extra={
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "duration_seconds": round(duration, 6),
                },
            )
            return response
        finally:
            call_fields.reset(token)

    async def _respond(self, request: Request, path: str, call_id: str) -> Response:
        """The response of the call, errors turned into their status and JSON body."""
        timeout = self.limits.call_timeout_seconds
        deadline = asyncio.timeout(timeout)
        worker = _Worker()
        try:
            try:
                async with deadline:
                    return await self._call(request, path, call_id, worker)
            except TimeoutError:
                if not deadline.expired():
                    raise  # the handler's own TimeoutError: unexpected, a 500 below
                error = Transient(f"timed out after {timeout:g} s")
                response = error_response(error, call_id, status=504)
                if worker.future is not None and not worker.future.done():
                    # runs once the 504 is sent: the caller has its answer first
                    response.background = BackgroundTask(
                        self._watch_abandoned, worker.future, call_id
                    )
                return response
        except MxtError as error:
            return error_response(error, call_id)
        except Exception:
            log.exception("handler raised an unexpected exception")
            return _json(
                {
                    "kind": "error",
                    "reason": "internal error; see the function's log",
                    "call_id": call_id,
                },
                500,
            )

    async def _call(self, request: Request, path: str, call_id: str, worker: _Worker) -> Response:
        """Read the body, build the handler's arguments, call it, render its result."""
        spec = self.spec
        body = await read_body(request, self.limits.max_body_bytes)
        context = Context(
            call_id=call_id,
            function=self.function,
            method=request.method,
            path=path,
            query=request.query_params,
            headers=request.headers,
            log=CallLogger(self.function_log, {"call_id": call_id}),
        )
        if spec.body_kind is BodyKind.OPENFAAS_EVENT:
            query = FlaskQuery(request.scope["query_string"])
            event = Event(body, request.headers, request.method, query, path)
            return openfaas_response(await self._invoke(event, context, worker=worker))
        arguments = [] if spec.body_kind is BodyKind.NONE else [self._argument(request, body)]
        if spec.takes_context:
            arguments.append(context)
        return typed_response(await self._invoke(*arguments, worker=worker), spec.success_status)

    def _argument(self, request: Request, body: bytes) -> Any:
        """The handler's first argument: a validated model, the raw body or its text."""
        kind = self.spec.body_kind
        if kind is BodyKind.BYTES:
            return body
        if kind is BodyKind.TEXT:
            try:
                return body.decode()
            except UnicodeDecodeError as error:
                raise BadInput(f"request body is not UTF-8 text: {error}") from None
        model = self.spec.request_model
        assert model is not None  # BodyKind.MODEL always has its model
        if request.method in QUERY_METHODS:
            return validate_query(model, request)
        return validate_json(model, body)

    async def _invoke(self, *arguments: Any, worker: _Worker) -> Any:
        """Call the handler: awaited if async, else in a worker thread with the call's context.

        The thread's future is kept in ``worker``: on timeout a call not yet started is
        cancelled, one running is watched (:meth:`_watch_abandoned`).
        """
        if self.spec.is_async:
            return await self.spec.handle(*arguments)
        call = functools.partial(self.spec.handle, *arguments)
        # copy_context: log lines written in the thread carry the call id
        worker.future = self.executor.submit(contextvars.copy_context().run, call)
        return await asyncio.wrap_future(worker.future)

    async def _watch_abandoned(self, future: Future[Any], call_id: str) -> None:
        """Start watching a handler whose call timed out (its 504 is sent by now)."""
        task = asyncio.get_running_loop().create_task(self._stop_if_still_running(future, call_id))
        _WATCHES.add(task)
        task.add_done_callback(_WATCHES.discard)

    async def _stop_if_still_running(self, future: Future[Any], call_id: str) -> None:
        """After the grace, stop the process if the abandoned handler still runs.

        Parameters
        ----------
        future
            The executor future of the handler's thread.
        call_id
            The call that timed out.
        """
        grace = self.limits.abandon_grace_seconds
        timeout = self.limits.call_timeout_seconds
        answered = time.monotonic()
        waiter = asyncio.wrap_future(future)
        done, _ = await asyncio.wait({waiter}, timeout=grace)
        late = time.monotonic() - answered
        if done:
            with contextlib.suppress(BaseException):
                waiter.exception()  # retrieved: no "exception never retrieved" warning
            log.warning(
                "handler of timed-out call %s finished %.1f s after its 504",
                call_id,
                late,
                extra={"call_id": call_id, "function": self.function},
            )
            return
        global _STOPPING
        exits = serving_process()
        seconds = round(timeout + late, 3)
        log.error(
            "function %s: handler of call %s still running after %.1f s "
            "(timeout %g s, then %g s of grace): %s",
            self.function,
            call_id,
            seconds,
            timeout,
            grace,
            "stopping the process so that it is restarted"
            if exits and not _STOPPING
            else "its thread runs on",
            extra={"call_id": call_id, "function": self.function, "seconds": seconds},
        )
        if exits and not _STOPPING:
            _STOPPING = True
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGTERM)


def _log_level(status: int) -> int:
    """Level of a call's log line: errors for 5xx, warnings for transient 503/504."""
    if status in (503, 504):
        return logging.WARNING
    return logging.ERROR if status >= 500 else logging.INFO


def validate_json(model: type[BaseModel], body: bytes) -> BaseModel:
    """The request model from a JSON body (empty body = ``{}``).

    Raises
    ------
    BadInput
        The body is not JSON (400).
    InvalidRequest
        The JSON does not match the model (422), naming each failing field.
    """
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        for problem in error.errors(include_url=False):
            if problem["type"] == "json_invalid":
                raise BadInput(
                    f"malformed JSON body: {problem['ctx'].get('error', problem['msg'])}"
                ) from None
        raise invalid_request(error) from None


def validate_query(model: type[BaseModel], request: Request) -> BaseModel:
    """The request model from query parameters (a repeated key gives a list).

    Raises
    ------
    InvalidRequest
        The parameters do not match the model (422), naming each failing field.
    """
    query = request.query_params
    values = {}
    for key in query:
        repeated = query.getlist(key)
        values[key] = repeated if len(repeated) > 1 else repeated[0]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise invalid_request(error) from None


def invalid_request(error: ValidationError) -> InvalidRequest:
    """The 422 error listing each failing field's location and message."""
    problems = [
        {
            "loc": ".".join(str(part) for part in problem["loc"]) or "body",
            "msg": problem["msg"],
            "type": problem["type"],
        }
        for problem in error.errors(include_url=False)
    ]
    summary = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems)
    return InvalidRequest(f"invalid request: {summary}", errors=problems)


def typed_response(result: Any, success_status: int) -> Response:
    """The HTTP response of a typed handler's return value.

    Parameters
    ----------
    result
        A Starlette response (sent as is), a pydantic model (JSON), bytes
        (octet-stream), str (text/plain), None (empty) or any JSON-serialisable value.
    success_status
        HTTP status of the response when ``result`` is not a response.
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), success_status, media_type="application/json")
    if isinstance(result, bytes):
        return Response(result, success_status, media_type="application/octet-stream")
    if isinstance(result, str):
        return Response(result, success_status, media_type="text/plain; charset=utf-8")
    if result is None:
        return Response(b"", success_status)
    return Response(
        orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY),
        success_status,
        media_type="application/json",
    )


def error_response(error: MxtError, call_id: str, status: int | None = None) -> Response:
    """The JSON error response ``{"kind", "reason", "detail"?, "call_id"}``.

    Parameters
    ----------
    error
        The classified error.
    call_id
        The call's id, so the caller can find its log lines.
    status
        HTTP status overriding the error class's own (504 for a timeout).
    """
    response = _json({**error.to_dict(), "call_id": call_id}, status or error.http_status)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["retry-after"] = str(max(0, math.ceil(retry_after)))
    return response


def _json(body: dict[str, Any], status: int) -> Response:
    """A JSON response."""
    return Response(orjson.dumps(body, default=str), status, media_type="application/json")
