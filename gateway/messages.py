"""Typed messages on the bus: async calls, their status, completions and dead letters.

Never bare dicts on NATS: every payload is one of these models, serialised as JSON.
Subjects and stream names are fixed here and in docs/development.md.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ASYNC_STREAM = "MXT_ASYNC"
DLQ_STREAM = "MXT_DLQ"
CALLS_STREAM = "MXT_CALLS"
STORAGE_STREAM = "MXT_STORAGE"
EVENTS_STREAM = "MXT_EVENTS"
TOPICS_STREAM = "MXT_TOPICS"
STATUS_BUCKET = "MXT_CALL_STATUS"
WORKER_DURABLE = "mxt-queue-worker"

# call ids become NATS KV keys and message ids: keep them to the KV key alphabet
CALL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_=\-]{1,128}$")

CallState = Literal["queued", "running", "succeeded", "failed", "dead-lettered"]


def new_call_id() -> str:
    """A fresh call id (uuid4, as OpenFaaS issues them)."""
    return str(uuid.uuid4())


def async_subject(function: str) -> str:
    """Subject of a function's durable async invocations."""
    return f"mxt.async.{function}"


def dlq_subject(function: str) -> str:
    """Subject of a function's dead letters."""
    return f"mxt.dlq.{function}"


def completed_subject(function: str) -> str:
    """Subject of a function's finished async calls."""
    return f"mxt.calls.completed.{function}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_bytes(self) -> bytes:
        """JSON bytes to publish."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Message:
        """Parse a published message (raises ``pydantic.ValidationError``)."""
        return cls.model_validate_json(data)


class AsyncCall(_Message):
    """One durable async invocation, as queued on ``mxt.async.<function>``.

    ``enqueued_at`` is a Unix time in seconds.
    """

    call_id: str
    function: str
    path: str = ""
    method: str = "POST"
    query: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body_b64: str = ""
    callback_url: str | None = None
    enqueued_at: float = Field(default_factory=time.time)
    # how many times it was redriven from the dead letters
    redrives: int = 0

    @property
    def body(self) -> bytes:
        """The request body."""
        return base64.b64decode(self.body_b64)

    @staticmethod
    def encode_body(body: bytes) -> str:
        """Base64 text of a body, for ``body_b64``."""
        return base64.b64encode(body).decode()


class CallStatus(_Message):
    """Where an async call stands; kept in the ``MXT_CALL_STATUS`` KV bucket.

    Times are Unix seconds; ``duration`` is seconds of the last attempt.
    """

    call_id: str
    function: str
    state: CallState
    attempts: int = 0
    status_code: int | None = None
    duration: float | None = None
    last_error: str | None = None
    enqueued_at: float | None = None
    updated_at: float = Field(default_factory=time.time)


class CallCompleted(_Message):
    """Published on ``mxt.calls.completed.<function>`` once per finished call.

    ``body_b64`` holds the function's response body when it is under 256 KiB;
    ``body_truncated`` says it was left out.
    """

    call_id: str
    function: str
    state: Literal["succeeded", "failed", "dead-lettered"]
    status_code: int | None
    attempts: int
    duration: float
    body_b64: str = ""
    body_truncated: bool = False
    content_type: str | None = None
    error: str | None = None
    finished_at: float = Field(default_factory=time.time)


class DeadLetter(_Message):
    """A call that failed for good, on ``mxt.dlq.<function>``."""

    call: AsyncCall
    reason: str
    attempts: int
    status_code: int | None = None
    failed_at: float = Field(default_factory=time.time)
