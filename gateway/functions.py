"""What the provider knows of one function: a :class:`FunctionSpec`.

Built from a ``stack.yml`` entry (``gateway.stack``) or from an OpenFaaS deploy
request (``POST /system/functions``); the annotations of ours (``topic``,
``com.mxt.routes``, ``com.mxt.write``, scale labels) are parsed by ``gateway.stack``'s
rules for both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bricks.errors import BadInput
from gateway.policy import ACCESS_ANNOTATION, parse_access
from gateway.stack import (
    DEFAULT_SCALE_MAX,
    DEFAULT_SCALE_MIN,
    DELIVERY_ANNOTATION,
    FUNCTION_NAME,
    FUNCTION_NAME_MAX_LENGTH,
    ROUTES_ANNOTATION,
    SCALE_MAX_LABEL,
    SCALE_MIN_LABEL,
    TOPIC_ANNOTATION,
    WRITE_ANNOTATION,
    parse_count,
    parse_delivery,
    parse_flag,
    parse_routes,
    parse_topics,
)

LAZY_ANNOTATION = "com.mxt.lazy"
MAX_BODY_ENV = "MXT_MAX_BODY_BYTES"
HANDLER_ANNOTATION = "com.mxt.handler"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in an OpenFaaS duration such as ``"30s"``, ``"2m"``, ``"500ms"`` or ``"10"``."""
    match = _DURATION.match(text)
    if match is None:
        raise BadInput(f"duration {text!r} is not a number with a unit ms, s, m or h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


@dataclass
class FunctionSpec:
    """One deployable function.

    Parameters
    ----------
    handler
        The handler folder (``functions/echo``), absolute or relative to ``workdir``.
    source
        ``"stack"`` for functions of ``stack.yml``, ``"api"`` for deployments made
        through ``POST /system/functions`` (the stack watcher leaves those alone).
    """

    name: str
    handler: Path
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = "stack"
    workdir: Path = field(default_factory=Path.cwd)
    # the OpenFaaS deploy request of an API deployment, kept to redeploy it at restart
    deploy_request: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not FUNCTION_NAME.match(self.name) or len(self.name) > FUNCTION_NAME_MAX_LENGTH:
            raise BadInput(
                f"function name {self.name!r} must be a DNS-1123 label (a-z, 0-9, '-')",
                field="service",
            )
        # validate the annotations once, at deploy time, with the reason
        self.routes = [tuple(r) for r in parse_routes(self.annotations.get(ROUTES_ANNOTATION, ""))]
        self.topics = parse_topics(self.annotations.get(TOPIC_ANNOTATION, ""))
        self.topic_delivery = parse_delivery(self.annotations.get(DELIVERY_ANNOTATION, "queued"))
        self.write_protected = parse_flag(
            WRITE_ANNOTATION, self.annotations.get(WRITE_ANNOTATION, "false")
        )
        self.access = parse_access(self.annotations.get(ACCESS_ANNOTATION), self.write_protected)
        self.timeout = self._timeout()
        self.max_body_bytes = self._max_body()
        self.min_replicas = parse_count(
            SCALE_MIN_LABEL, self.labels.get(SCALE_MIN_LABEL), DEFAULT_SCALE_MIN
        )
        self.max_replicas = parse_count(
            SCALE_MAX_LABEL, self.labels.get(SCALE_MAX_LABEL), DEFAULT_SCALE_MAX
        )

    def _timeout(self) -> float | None:
        # OpenFaaS's watchdog reads exec_timeout; honour it as the gateway's upstream limit
        for key in ("exec_timeout", "write_timeout", "read_timeout"):
            if key in self.env:
                return parse_duration(self.env[key])
        return None

    def _max_body(self) -> int:
        """The largest request body the function takes, in bytes: its own
        ``MXT_MAX_BODY_BYTES``, else the stack's, else the runtime's default; the
        gateway refuses larger bodies with the same 413 the function would give."""
        from gateway.runtime.limits import DEFAULT_MAX_BODY_BYTES

        for text in (self.env.get(MAX_BODY_ENV), os.environ.get(MAX_BODY_ENV)):
            if text and text.strip().isdigit() and int(text) > 0:
                return int(text)
        return DEFAULT_MAX_BODY_BYTES

    @property
    def lazy(self) -> bool:
        """Whether the function starts on its first call rather than with the stack."""
        return self.annotations.get(LAZY_ANNOTATION, "").lower() == "true"

    @property
    def handler_path(self) -> Path:
        """The handler folder as an absolute path."""
        return self.handler if self.handler.is_absolute() else self.workdir / self.handler

    def fingerprint(self) -> tuple[Any, ...]:
        """What, when changed, needs the function's processes restarted."""
        return (
            str(self.handler_path),
            self.image,
            sorted(self.env.items()),
            sorted(self.labels.items()),
            sorted(self.annotations.items()),
        )

    @classmethod
    def from_deploy_request(
        cls, body: dict[str, Any], workdir: Path, roots: Iterable[Path] = ()
    ) -> FunctionSpec:
        """A spec from an OpenFaaS ``FunctionDeployment`` JSON body.

        The handler folder comes from our extension key ``handler`` or the
        annotation ``com.mxt.handler`` (OpenFaaS itself would pull ``image``). Deploying
        runs code on the host, so the folder must lie inside one of ``roots`` (the
        stack's own function folders, ``MXT_DEPLOY_ROOTS``), and the environment may
        not set what the platform sets or what changes how Python or the loader start
        (:func:`filter_environment`).
        """
        name = body.get("service") or body.get("name")
        if not isinstance(name, str) or not name:
            raise BadInput("deploy request needs the field 'service' (the function name)")
        annotations = _str_dict(body, "annotations")
        handler = body.get("handler") or annotations.get(HANDLER_ANNOTATION)
        if not isinstance(handler, str) or not handler:
            raise BadInput(
                "deploy request needs the field 'handler' (a function folder such as "
                "'functions/echo') or the annotation com.mxt.handler",
                field="handler",
            )
        spec = cls(
            name=name,
            handler=Path(handler),
            image=str(body.get("image") or ""),
            env=filter_environment(_str_dict(body, "envVars")),
            labels=_str_dict(body, "labels"),
            annotations=annotations,
            source="api",
            workdir=workdir,
        )
        folder = spec.handler_path.resolve()
        allowed = [root.resolve() for root in roots]
        if not any(folder.is_relative_to(root) for root in allowed):
            where = ", ".join(str(root) for root in allowed) or "none configured"
            raise BadInput(
                f"handler folder {handler!r} is outside the stack's function folders ({where})",
                field="handler",
            )
        if not folder.is_dir() or not (folder / "handler.py").is_file():
            raise BadInput(f"handler folder {handler!r} does not exist", field="handler")
        spec.handler = folder
        spec.deploy_request = dict(body, handler=str(folder))
        return spec


#: environment variables a deployment may not set: the platform's own (its URLs,
#: secrets and stores) and those that change how the interpreter or the loader start
RESERVED_ENV = re.compile(
    r"^(MXT_(DATA_DIR|SECRETS_DIR|NATS_URL|GATEWAY_URL|DATABASE_URL|OBJECT_STORE|S3_.*|"
    r"PLATFORM.*|CALLBACK_ALLOW|DEPLOY_ROOTS)|PYTHON.*|LD_.*|PATH|HOME|SSL_CERT_.*|"
    r"REQUESTS_CA_BUNDLE|AWS_.*|HTTPS?_PROXY|NO_PROXY)$",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def filter_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` checked for a deployment: names well formed, none reserved.

    Raises
    ------
    BadInput
        Naming the variable refused and why.
    """
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise BadInput(f"environment variable name {key!r} is not valid", field="envVars")
        if RESERVED_ENV.match(key):
            raise BadInput(
                f"environment variable {key!r} is the platform's to set, not a deployment's",
                field="envVars",
            )
        if "\x00" in value or len(value) > 4096:
            raise BadInput(
                f"environment variable {key!r}: value too long or has NUL", field="envVars"
            )
    return env


def _str_dict(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise BadInput(f"field {key!r} must be an object of strings", field=key)
    return {str(k): str(v) for k, v in value.items()}
