"""Structured logs: one JSON object per line on stderr, carrying the call id.

The call id (and the run and task ids when the caller sent them) live in context
variables set by the runtime for each call, so that every log line written while
serving that call carries them, including lines from the handler's own loggers and
from the worker thread a synchronous handler runs in.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

#: Correlation fields of the call being served: ``call_id``, ``run_id``, ``task_id``.
call_fields: ContextVar[dict[str, str] | None] = ContextVar("mxt_call_fields", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is
# written as a field of its own.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, function, call_id, message, extras.

    Parameters
    ----------
    function
        Name of the function this process serves, written on every line.
    """

    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record`` (no trailing newline)."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "function": self.function,
            "logger": record.name,
        }
        line.update(call_fields.get() or {})
        line["message"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(function: str, level: str = "INFO") -> None:
    """Send every logger of the process to stderr as JSON lines.

    Parameters
    ----------
    function
        Name of the function this process serves.
    level
        Root level name (``MXT_LOG_LEVEL``), e.g. ``"INFO"`` or ``"WARNING"``.

    Raises
    ------
    ValueError
        ``level`` is not a logging level name.
    """
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"MXT_LOG_LEVEL={level!r} is not a logging level (DEBUG, INFO, ...)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(function))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers when given a log config; we give it none and
    # let its records propagate to ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


class CallLogger(logging.LoggerAdapter):
    """A logger whose lines carry the call id even outside the call's context.

    Handlers may hand ``context.log`` to threads of their own, where the context
    variables of the call are not set; the adapter adds the ids explicitly.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:  # noqa: D102
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
