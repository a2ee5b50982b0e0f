"""One error taxonomy for the whole system.

Every failure is classified by what the caller should do next, in the manner of
LSST pipe_base's task status: the function runtime maps each kind to an HTTP status
and the JetStream consumers map it to an acknowledgement.

==============  ===========  ===================================  ==================
kind            HTTP status  meaning                              JetStream
==============  ===========  ===================================  ==================
bad_input       400 (or the  the request itself is wrong          ``term`` (no retry)
                subclass's)
unprocessable   422          the request is well formed but the   ``term`` (no retry)
                             data cannot be processed
transient       503          storage, database or network fault   ``nak(delay)``
no_work         200          nothing to do: success               ``ack``
==============  ===========  ===================================  ==================
"""

from __future__ import annotations

from typing import Any, ClassVar


class MxtError(Exception):
    """Base class of every classified error.

    Parameters
    ----------
    reason
        A sentence for a person: what is wrong, naming the field, keyword,
        column or key concerned.
    detail
        Optional machine-readable context (JSON-serialisable).
    """

    kind: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    retry: ClassVar[bool] = False

    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON body every layer returns for this error."""
        body: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.detail:
            body["detail"] = self.detail
        return body


class BadInput(MxtError):
    """The request is wrong: a missing or malformed field, a hostile key."""

    kind = "bad_input"
    http_status = 400


class NotFound(BadInput):
    """The named thing (function, object, run, CALDB file) does not exist."""

    http_status = 404


class Conflict(BadInput):
    """The request contradicts the current state (an immutable version exists)."""

    http_status = 409


class PayloadTooLarge(BadInput):
    """The request body is larger than the configured limit."""

    http_status = 413


class Unprocessable(MxtError):
    """Well-formed request, but the data cannot be processed (a corrupt FITS file)."""

    kind = "unprocessable"
    http_status = 422


class Transient(MxtError):
    """A fault that may go away: storage, database or network. Retry with backoff.

    Parameters
    ----------
    retry_after
        Suggested delay before the next attempt, in seconds.
    """

    kind = "transient"
    http_status = 503
    retry = True

    def __init__(self, reason: str, retry_after: float | None = None, **detail: Any) -> None:
        super().__init__(reason, **detail)
        self.retry_after = retry_after


class NoWork(MxtError):
    """Nothing to do; the caller treats it as success."""

    kind = "no_work"
    http_status = 200


def classify_status(status: int) -> str:
    """The taxonomy kind of an HTTP status code returned by a function.

    Parameters
    ----------
    status
        HTTP status code.
    """
    if status < 300:
        return "ok"
    if status in (408, 425, 429) or status >= 500:
        return "transient"
    if status == 422:
        return "unprocessable"
    return "bad_input"
