"""Helpers of the runtime tests: handler folders written on the fly, ASGI clients."""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from gateway.runtime import create_app
from gateway.runtime.limits import RuntimeLimits
from gateway.runtime.logs import JsonFormatter

REPOSITORY = Path(__file__).resolve().parents[2]
# the platform's test functions (tests/stack.yml)
FUNCTIONS = REPOSITORY / "tests" / "functions"


@pytest.fixture()
def write_handler(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``handler.py`` with the given source into a fresh folder; return the folder."""

    def write(name: str, source: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "handler.py").write_text(textwrap.dedent(source))
        return folder

    return write


@asynccontextmanager
async def asgi_client(
    handler_dir: Path, name: str = "fn", limits: RuntimeLimits | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the function's ASGI app in process."""
    app = create_app(handler_dir, name, limits or RuntimeLimits())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
        yield client


@pytest.fixture()
def json_log_lines() -> Iterator[Callable[[], list[str]]]:
    """The runtime's JSON log lines written during the test (root logger, INFO)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("fn"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [line for line in stream.getvalue().splitlines() if line]
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
