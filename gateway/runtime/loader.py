"""Load a function folder's ``handler.py`` and work out which contract it follows.

Two contracts (docs/development.md, "Function handlers"):

- typed: ``handle(request: Model[, context])`` where the first parameter's annotation
  is a pydantic model (JSON body, validated), ``bytes`` (raw body) or ``str`` (body
  decoded as UTF-8); sync or async;
- OpenFaaS ``python3-http``: ``handle(event, context)`` with an unannotated event.

The folder is imported as a package of its own, so a handler that uses relative
imports (``from .helpers import x``), as OpenFaaS's ``function`` package allows,
works unchanged, and several functions can be loaded in one process (tests).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class HandlerLoadError(Exception):
    """The handler folder cannot be served: missing file, import error, bad signature."""


class BodyKind(Enum):
    """How the request reaches the handler's first parameter."""

    MODEL = "model"
    BYTES = "bytes"
    TEXT = "text"
    NONE = "none"
    OPENFAAS_EVENT = "openfaas_event"


@dataclass(frozen=True)
class HandlerSpec:
    """A loaded handler and what the runtime needs to know to call it.

    Parameters
    ----------
    handle
        The ``handle`` callable.
    body_kind
        What its first parameter receives.
    request_model
        The pydantic model of the request (``BodyKind.MODEL`` only).
    response_model
        The pydantic model of the return annotation, for the OpenAPI document.
    takes_context
        Whether ``handle`` takes a second (context) parameter.
    is_async
        Whether ``handle`` is a coroutine function (else it runs in a thread).
    success_status
        HTTP status of a successful call (module constant ``SUCCESS_STATUS``).
    summary
        First line of ``handle``'s docstring, for the OpenAPI document.
    """

    handle: Callable[..., Any]
    body_kind: BodyKind
    request_model: type[BaseModel] | None
    response_model: type[BaseModel] | None
    takes_context: bool
    is_async: bool
    success_status: int
    summary: str


def load_handler(handler_dir: Path, function_name: str) -> HandlerSpec:
    """Import ``handler_dir/handler.py`` and classify its ``handle``.

    Parameters
    ----------
    handler_dir
        The function folder (``functions/echo``).
    function_name
        The function's name, used to name the imported package.

    Raises
    ------
    HandlerLoadError
        With a sentence saying what is wrong.
    """
    module = _import_handler_module(Path(handler_dir), function_name)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise HandlerLoadError(f"{module.__file__} defines no function handle()")
    success_status = getattr(module, "SUCCESS_STATUS", 200)
    if not isinstance(success_status, int) or not 200 <= success_status < 300:
        raise HandlerLoadError(
            f"{module.__file__}: SUCCESS_STATUS must be an integer in 200-299, "
            f"not {success_status!r}"
        )
    return _classify(handle, success_status, str(module.__file__))


def _import_handler_module(handler_dir: Path, function_name: str) -> Any:
    """Import the folder as package ``mxt_function_<name>`` and return its ``handler``."""
    handler_file = handler_dir / "handler.py"
    if not handler_file.is_file():
        raise HandlerLoadError(f"no handler.py in {handler_dir.resolve()}")
    package = "mxt_function_" + re.sub(r"\W", "_", function_name)
    spec = importlib.util.spec_from_file_location(
        package,
        handler_dir / "__init__.py",
        submodule_search_locations=[str(handler_dir.resolve())],
    )
    assert spec is not None  # a file location always gives a spec
    package_module = importlib.util.module_from_spec(spec)
    sys.modules[package] = package_module
    # The folder needs no __init__.py (OpenFaaS's template creates an empty one).
    if (handler_dir / "__init__.py").is_file():
        spec.loader.exec_module(package_module)  # type: ignore[union-attr]
    sys.modules.pop(f"{package}.handler", None)
    try:
        return importlib.import_module(f"{package}.handler")
    except Exception as error:  # any import-time failure of user code
        raise HandlerLoadError(
            f"importing {handler_file} failed: {type(error).__name__}: {error}"
        ) from error


def _classify(handle: Callable[..., Any], success_status: int, where: str) -> HandlerSpec:
    """Decide the contract of ``handle`` from its signature and annotations."""
    try:
        parameters = list(inspect.signature(handle).parameters.values())
        hints = typing.get_type_hints(handle)
    except (NameError, TypeError) as error:
        raise HandlerLoadError(f"{where}: cannot read handle()'s signature: {error}") from error
    if len(parameters) > 2:
        raise HandlerLoadError(
            f"{where}: handle() takes {len(parameters)} parameters; "
            "expected (request[, context]) or (event, context)"
        )
    body_kind, request_model = BodyKind.NONE, None
    if parameters:
        body_kind, request_model = _body_kind(parameters, hints, where)
    response_model = hints.get("return")
    if not (inspect.isclass(response_model) and issubclass(response_model, BaseModel)):
        response_model = None
    doc = inspect.getdoc(handle) or ""
    return HandlerSpec(
        handle=handle,
        body_kind=body_kind,
        request_model=request_model,
        response_model=response_model,
        takes_context=len(parameters) == 2,
        is_async=inspect.iscoroutinefunction(handle),
        success_status=success_status,
        summary=doc.splitlines()[0] if doc else "",
    )


def _body_kind(
    parameters: list[inspect.Parameter], hints: dict[str, Any], where: str
) -> tuple[BodyKind, type[BaseModel] | None]:
    """What the first parameter of ``handle`` receives."""
    annotation = hints.get(parameters[0].name)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return BodyKind.MODEL, annotation
    if annotation is bytes:
        return BodyKind.BYTES, None
    if annotation is str:
        return BodyKind.TEXT, None
    if annotation is None and len(parameters) == 2:
        return BodyKind.OPENFAAS_EVENT, None
    raise HandlerLoadError(
        f"{where}: handle()'s first parameter {parameters[0].name!r} is annotated "
        f"{annotation!r}; annotate it with a pydantic model, bytes or str, or write an "
        "OpenFaaS python3-http handler handle(event, context)"
    )
