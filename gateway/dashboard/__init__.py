"""The dashboard at ``/ui/``: static HTML, CSS and ES modules served by the gateway.

No build step and no server-side state: the page reads the same APIs an operator's
script would (``/mxt/runs``, ``/mxt_missiondb/``, ``/caldb/``, ``/mxt_configdb/``,
``/function/objects-*``) and the live feed of ``/mxt_websocket/events``.

Every response of this app carries the browser's security headers
(:func:`security_headers`): a Content-Security-Policy that allows only this origin's
files (no inline script or style, no plugins, no ``<base>``, no framing), and
``X-Frame-Options``, ``X-Content-Type-Options`` and ``Referrer-Policy``. The page has
no inline script or style, so the policy needs no ``'unsafe-inline'``.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.hub import json_http_error

HERE = Path(__file__).resolve().parent
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: a Host header that may be written into the policy as is (no spaces, ``;`` or quotes)
SAFE_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
#: every directive but connect-src, which names the live feed's websocket origin
CSP_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def content_security_policy(host: str | None) -> str:
    """The dashboard's Content-Security-Policy for a page served to ``host``.

    ``connect-src`` is ``'self'`` plus ``ws://`` and ``wss://`` of the same host (the
    live feed); browsers that follow CSP 3 already count those as ``'self'``, older
    ones need them named. A host that is not a plain ``name[:port]`` is left out.
    """
    connect = "connect-src 'self'"
    if host and SAFE_HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((*CSP_DIRECTIVES, connect))


def security_headers(host: str | None) -> dict[str, str]:
    """The headers every dashboard response carries."""
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class SecurityHeaders:
    """ASGI middleware adding :func:`security_headers` to every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; set the headers on the response's start message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        extra = security_headers(host)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _assets() -> dict[str, Path]:
    """The files the page may load, by name: only scripts, styles and icons of this folder."""
    return {p.name: p for p in HERE.iterdir() if p.suffix in ASSET_TYPES and p.is_file()}


def create_app() -> ASGIApp:
    """The dashboard as an ASGI app (the gateway mounts it at ``/ui``)."""
    index = (HERE / "index.html").read_text()
    assets = _assets()

    async def page(request: Request) -> Response:
        # absolute asset URLs (no <base>, which the policy forbids): they work at /ui,
        # /ui/ and behind a proxy that moves the prefix into root_path
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        return HTMLResponse(index.replace("{{base}}", base), headers={"Cache-Control": "no-cache"})

    async def asset(request: Request) -> Response:
        path = assets.get(request.path_params["name"])
        if path is None:
            raise HTTPException(404, f"no dashboard file {request.path_params['name']!r}")
        return FileResponse(
            path, media_type=ASSET_TYPES[path.suffix], headers={"Cache-Control": "no-cache"}
        )

    app = Starlette(
        routes=[Route("/", page), Route("/{name:str}", asset)],
        exception_handlers={HTTPException: json_http_error},
    )
    return SecurityHeaders(app)
