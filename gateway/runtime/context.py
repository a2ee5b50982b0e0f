"""What a handler learns about the call it serves, besides the request body."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from starlette.datastructures import Headers, QueryParams

# The host name does not change while the process lives; read it once, not per call.
HOSTNAME = os.getenv("HOSTNAME", "localhost")


@dataclass(frozen=True)
class Context:
    """The call being served.

    Handlers of the typed contract take it as their optional second parameter;
    OpenFaaS ``python3-http`` handlers get it as their ``context`` (it has the
    ``hostname`` attribute that template's context has).

    Parameters
    ----------
    call_id
        The call's correlation id (``X-Call-Id``), also on every log line.
    function
        Name of the function serving the call.
    method
        HTTP method (``"POST"``, ``"GET"``...).
    path
        Sub-path after the function's root, with a leading ``/`` (``"/"`` for the root).
    query
        Query parameters (``context.query.get("key")``, ``getlist``).
    headers
        Request headers, case-insensitive.
    log
        A logger whose JSON lines carry the call id.
    """

    call_id: str
    function: str
    method: str
    path: str
    query: QueryParams
    headers: Headers
    log: logging.LoggerAdapter
    hostname: str = HOSTNAME

    @property
    def run_id(self) -> str | None:
        """The pipeline run this call belongs to (``X-Mxt-Run-Id``), if any."""
        return self.headers.get("x-mxt-run-id")

    @property
    def task_id(self) -> str | None:
        """The pipeline task this call executes (``X-Mxt-Task-Id``), if any."""
        return self.headers.get("x-mxt-task-id")
