"""Per-process limits of a function: request size, call duration, abandoned handlers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from bricks.errors import BadInput, PayloadTooLarge
from storage.settings import positive_env

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_CALL_TIMEOUT_SECONDS = 300.0
DEFAULT_HANDLER_THREADS = 40
DEFAULT_ABANDON_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class RuntimeLimits:
    """Limits applied to every call.

    Parameters
    ----------
    max_body_bytes
        Largest accepted request body, in bytes (``MXT_MAX_BODY_BYTES``).
    call_timeout_seconds
        Longest a call may take, in seconds, body reading included
        (``MXT_CALL_TIMEOUT_SECONDS``).
    handler_threads
        Threads running synchronous handlers concurrently (``MXT_HANDLER_THREADS``).
    abandon_grace_seconds
        How long a synchronous handler may run on after its call timed out (504), in
        seconds, before the runtime process exits so that it is restarted: a thread
        cannot be stopped, a process can (``MXT_ABANDON_GRACE_SECONDS``).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS
    handler_threads: int = DEFAULT_HANDLER_THREADS
    abandon_grace_seconds: float = DEFAULT_ABANDON_GRACE_SECONDS

    @classmethod
    def from_env(cls) -> RuntimeLimits:
        """The limits set in the environment, defaults otherwise.

        Raises
        ------
        ValueError
            Naming the variable whose value is not a positive number.
        """
        return cls(
            max_body_bytes=int(positive_env("MXT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int)),
            call_timeout_seconds=positive_env(
                "MXT_CALL_TIMEOUT_SECONDS", DEFAULT_CALL_TIMEOUT_SECONDS, float
            ),
            handler_threads=int(positive_env("MXT_HANDLER_THREADS", DEFAULT_HANDLER_THREADS, int)),
            abandon_grace_seconds=positive_env(
                "MXT_ABANDON_GRACE_SECONDS", DEFAULT_ABANDON_GRACE_SECONDS, float
            ),
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole request body, refused as soon as it exceeds ``max_bytes``.

    The declared ``Content-Length`` is checked before reading anything; a chunked
    body (no length) is counted while it arrives, so an oversized upload is never
    held in memory whole.

    Parameters
    ----------
    request
        The incoming request.
    max_bytes
        Largest accepted body, in bytes.

    Raises
    ------
    PayloadTooLarge
        The body is larger than ``max_bytes`` (413).
    BadInput
        ``Content-Length`` is not an integer.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadInput(f"Content-Length header {declared!r} is not an integer") from None
        if length > max_bytes:
            raise _too_large(max_bytes, length)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes, None)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int, length: int | None) -> PayloadTooLarge:
    """The 413 error for a body over the limit."""
    size = f"of {length} bytes " if length is not None else ""
    return PayloadTooLarge(
        f"request body {size}exceeds the limit of {max_bytes} bytes (MXT_MAX_BODY_BYTES)",
        limit_bytes=max_bytes,
    )
