"""The dashboard at ``/ui/``: static HTML, CSS and ES modules served by the gateway.

No build step and no server-side state: the page reads the same APIs an operator's
script would (``/mxt/runs``, ``/mxt_missiondb/``, ``/caldb/``, ``/mxt_configdb/``,
``/function/objects-*``) and the live feed of ``/mxt_websocket/events``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from gateway.hub import json_http_error

HERE = Path(__file__).resolve().parent
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _assets() -> dict[str, Path]:
    """The files the page may load, by name: only scripts, styles and icons of this folder."""
    return {p.name: p for p in HERE.iterdir() if p.suffix in ASSET_TYPES and p.is_file()}


def create_app() -> Starlette:
    """The dashboard as an ASGI app (the gateway mounts it at ``/ui``)."""
    index = (HERE / "index.html").read_text()
    assets = _assets()

    async def page(request: Request) -> Response:
        # <base> makes the relative asset URLs work at /ui/ directly and behind nginx
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        return HTMLResponse(index.replace("{{base}}", base), headers={"Cache-Control": "no-cache"})

    async def asset(request: Request) -> Response:
        path = assets.get(request.path_params["name"])
        if path is None:
            raise HTTPException(404, f"no dashboard file {request.path_params['name']!r}")
        return FileResponse(
            path, media_type=ASSET_TYPES[path.suffix], headers={"Cache-Control": "no-cache"}
        )

    return Starlette(
        routes=[Route("/", page), Route("/{name:str}", asset)],
        exception_handlers={HTTPException: json_http_error},
    )
