"""OpenFaaS ``python3-http`` compatibility: its event object and its response rules.

A handler written for OpenFaaS's official ``python3-http`` template runs here
unchanged: it receives an event with ``body`` (bytes), ``headers``, ``method``,
``query`` and ``path``, and a context with ``hostname``; what it returns is turned
into a response by that template's rules:

- ``None`` → 200, empty body;
- a dict → ``statusCode`` (default 200), ``body`` (a dict is sent as JSON, anything
  else as ``str(body)``, text/html as Flask does), ``headers`` (dict or pairs);
- a str or bytes → 200 with it as body (text/html); a list → JSON;
- a tuple ``(body, status[, headers])`` as Flask accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response

# Flask's default for a str body; python3-http users rely on setting Content-Type.
_FLASK_TEXT = "text/html; charset=utf-8"


class FlaskQuery(QueryParams):
    """Query parameters read as Flask's ``request.args``: a repeated key gives its first value.

    (Starlette's own give the last one; ``getlist`` gives them all in both.)
    """

    def __getitem__(self, key: str) -> str:
        values = self.getlist(key)
        if not values:
            raise KeyError(key)
        return values[0]

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of ``key``, or ``default``."""
        values = self.getlist(key)
        return values[0] if values else default


@dataclass(frozen=True)
class Event:
    """The request as OpenFaaS's ``python3-http`` template presents it.

    Parameters
    ----------
    body
        Raw request body.
    headers
        Request headers, case-insensitive.
    method
        HTTP method.
    query
        Query parameters (``event.query.get("name")``: the first value, as in Flask).
    path
        Request path as the function sees it (``"/"`` for the root).
    """

    body: bytes
    headers: Headers
    method: str
    query: QueryParams
    path: str


def openfaas_response(result: Any) -> Response:
    """The HTTP response the ``python3-http`` template would send for ``result``.

    Parameters
    ----------
    result
        What the handler returned.
    """
    if result is None:
        return Response(b"", 200, media_type=_FLASK_TEXT)
    if isinstance(result, dict):
        return _dict_response(result)
    if isinstance(result, tuple):
        return _tuple_response(result)
    return _body_response(result, 200, None)


def _dict_response(result: dict[str, Any]) -> Response:
    """``{"statusCode", "body", "headers"}`` → response."""
    status = result.get("statusCode", 200)
    body = result.get("body", "")
    rendered = body if isinstance(body, dict) else str(body)
    return _body_response(rendered, status, result.get("headers"))


def _tuple_response(result: tuple[Any, ...]) -> Response:
    """Flask's ``(body, status[, headers])`` → response."""
    body = result[0]
    status = result[1] if len(result) > 1 and isinstance(result[1], int) else 200
    headers = result[-1] if len(result) > 1 and not isinstance(result[-1], int) else None
    return _body_response(body, status, headers)


def _body_response(body: Any, status: int, headers: Any) -> Response:
    """A response for a body value as Flask renders it."""
    header_pairs = _header_pairs(headers)
    if isinstance(body, dict | list):
        response = Response(orjson.dumps(body), status, media_type="application/json")
    elif isinstance(body, bytes):
        response = Response(body, status, media_type=_FLASK_TEXT)
    else:
        response = Response(str(body), status, media_type=_FLASK_TEXT)
    for name, value in header_pairs:
        if name.lower() == "content-type":
            response.headers["content-type"] = str(value)
        else:
            response.headers.append(name, str(value))
    return response


def _header_pairs(headers: Any) -> list[tuple[str, Any]]:
    """Header pairs from a dict, a list of pairs, or nothing."""
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return [(name, value) for name, value in headers]
