"""``stack.yml``: load and validate the OpenFaaS stack file, with our annotations.

The schema is OpenFaaS's (``version: 1.0``, ``provider``, ``functions``,
``configuration.templates`` / ``copy``), strict: an unknown key is an error, as is
a function name that is not a DNS-1123 label, a duplicate name, a handler folder
that does not exist (relative to the stack file's directory) or an annotation of
ours that does not parse (docs/development.md, "stack.yml annotations of ours").
All problems of a file are reported together, each naming its function and key.

``${VAR}`` and ``${VAR:-default}`` are replaced from the environment before the
YAML is parsed, as faas-cli does (an unset variable without default becomes "").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from bricks.errors import BadInput
from gateway.policy import ACCESS_ANNOTATION, parse_access

#: OpenFaaS function names are Kubernetes DNS-1123 labels.
FUNCTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FUNCTION_NAME_MAX_LENGTH = 63
ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SCALE_MIN_LABEL = "com.openfaas.scale.min"
SCALE_MAX_LABEL = "com.openfaas.scale.max"
TOPIC_ANNOTATION = "topic"
ROUTES_ANNOTATION = "com.mxt.routes"
WRITE_ANNOTATION = "com.mxt.write"
DELIVERY_ANNOTATION = "com.mxt.topic-delivery"
#: how the connector hands a topic message to its function (``com.mxt.topic-delivery``)
TOPIC_DELIVERIES = ("queued", "direct")
#: OpenFaaS CE's defaults when the scale labels are absent.
DEFAULT_SCALE_MIN = 1
DEFAULT_SCALE_MAX = 20
# Languages whose handler folder must hold a handler.py that gateway.runtime serves.
PYTHON_HANDLER_LANGS = ("python3-mxt", "python3-http")

_SUBSTITUTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ROUTE_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~-]+|\{[A-Za-z_][A-Za-z0-9_]*\})$")
_SUBJECT_TOKEN = re.compile(r"^(?:[^\s.*>]+|\*|>)$")
_QUANTITY = re.compile(r"^\d+(?:\.\d+)?(?:m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


class StackError(BadInput):
    """The stack file is invalid; ``reason`` lists every problem, ``detail['problems']`` too."""


def _scalar_text(value: Any) -> Any:
    """YAML scalars as the strings OpenFaaS reads them as (``true``, ``1``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]


class _Strict(BaseModel):
    """Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """``limits`` / ``requests``: Kubernetes quantities (``"128Mi"``, ``"500m"``)."""

    memory: Text | None = Field(default=None, pattern=_QUANTITY.pattern)
    cpu: Text | None = Field(default=None, pattern=_QUANTITY.pattern)


class Route(NamedTuple):
    """A resource route of ``com.mxt.routes``: method and path template."""

    method: str
    path: str

    @property
    def parameters(self) -> list[str]:
        """Names of the ``{parameter}`` segments, in order."""
        return re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", self.path)


class Function(_Strict):
    """One function of the stack (OpenFaaS ``functions.<name>``)."""

    lang: str
    handler: str
    image: str | None = None
    fprocess: str | None = None
    namespace: str | None = None
    environment: dict[str, Text] = Field(default_factory=dict)
    environment_file: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    constraints: list[str] = Field(default_factory=list)
    readonly_root_filesystem: bool = False
    build_args: dict[str, Text] = Field(default_factory=dict)
    build_options: list[str] = Field(default_factory=list)
    skip_build: bool = False

    _name: str = PrivateAttr(default="")
    _directory: Path = PrivateAttr(default=Path("."))
    _file_environment: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def name(self) -> str:
        """The function's name (its key under ``functions``)."""
        return self._name

    @property
    def handler_dir(self) -> Path:
        """The handler folder, absolute (relative paths are from the stack file's directory)."""
        return (self._directory / self.handler).resolve()

    @property
    def env(self) -> dict[str, str]:
        """The function's environment: ``environment_file`` entries, then ``environment``."""
        return {**self._file_environment, **self.environment}

    @property
    def topics(self) -> list[str]:
        """NATS subjects of the ``topic`` annotation (comma-separated)."""
        return parse_topics(self.annotations.get(TOPIC_ANNOTATION, ""))

    @property
    def topic_delivery(self) -> str:
        """``queued`` (default: each message becomes a durable async call) or ``direct``.

        ``direct``: the connector calls the function itself and acknowledges the
        message once it answered 2xx; retries are JetStream redeliveries, dead letters
        go to ``MXT_DLQ`` as for queued calls (annotation ``com.mxt.topic-delivery``).
        """
        return parse_delivery(self.annotations.get(DELIVERY_ANNOTATION, "queued"))

    @property
    def routes(self) -> list[Route]:
        """Resource routes of the ``com.mxt.routes`` annotation (``;``-separated)."""
        return parse_routes(self.annotations.get(ROUTES_ANNOTATION, ""))

    @property
    def write_protected(self) -> bool:
        """Whether invoking the function needs the gateway's basic auth (``com.mxt.write``)."""
        return parse_flag(WRITE_ANNOTATION, self.annotations.get(WRITE_ANNOTATION, "false"))

    @property
    def scale_min(self) -> int:
        """Fewest replicas (label ``com.openfaas.scale.min``, default 1)."""
        return parse_count(SCALE_MIN_LABEL, self.labels.get(SCALE_MIN_LABEL), DEFAULT_SCALE_MIN)

    @property
    def scale_max(self) -> int:
        """Most replicas (label ``com.openfaas.scale.max``, default 20)."""
        return parse_count(SCALE_MAX_LABEL, self.labels.get(SCALE_MAX_LABEL), DEFAULT_SCALE_MAX)


class Provider(_Strict):
    """``provider``: where ``faas-cli`` deploys."""

    name: Literal["openfaas"]
    gateway: str | None = None


class Template(_Strict):
    """``configuration.templates`` entry: a template name and where to pull it from."""

    name: str
    source: str | None = None


class Configuration(_Strict):
    """``configuration``: templates to pull and paths copied into every build context."""

    templates: list[Template] = Field(default_factory=list)
    copy_paths: list[str] = Field(default_factory=list, alias="copy")


class Stack(_Strict):
    """A validated stack file."""

    version: Literal["1.0"]
    provider: Provider
    functions: dict[str, Function]
    configuration: Configuration = Field(default_factory=Configuration)

    _path: Path = PrivateAttr(default=Path("stack.yml"))

    @property
    def path(self) -> Path:
        """The stack file, absolute."""
        return self._path

    @property
    def directory(self) -> Path:
        """The directory relative paths of the stack file start from."""
        return self._path.parent


def load_stack(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Stack:
    """Read, substitute, parse and validate a stack file.

    Parameters
    ----------
    path
        The stack file (``stack.yml``).
    environ
        Variables for ``${VAR}`` substitution; the process environment when omitted.

    Raises
    ------
    StackError
        Listing every problem found, each naming the function and key concerned.
    """
    stack_path = Path(path).resolve()
    try:
        text = stack_path.read_text()
    except OSError as error:
        raise StackError(f"{path}: cannot read the stack file: {error.strerror}") from None
    document = _parse_yaml(substitute_variables(text, os.environ if environ is None else environ))
    if not isinstance(document, dict):
        raise StackError(f"{path}: the stack file must be a YAML mapping")
    document["version"] = _scalar_text(document.get("version"))
    try:
        stack = Stack.model_validate(document)
    except ValidationError as error:
        problems = [_describe(problem) for problem in error.errors(include_url=False)]
        raise _stack_error(path, problems) from None
    stack._path = stack_path
    problems = _check_stack(stack)
    if problems:
        raise _stack_error(path, problems)
    return stack


def substitute_variables(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` as faas-cli does.

    Parameters
    ----------
    text
        The stack file's text.
    environ
        Variable values; an unset or empty variable takes the default, else "".
    """

    def replacement(match: re.Match[str]) -> str:
        value = environ.get(match.group(1), "")
        return value if value or match.group(2) is None else match.group(2)

    return _SUBSTITUTION.sub(replacement, text)


def parse_topics(text: str) -> list[str]:
    """NATS subjects from a ``topic`` annotation: ``"mxt.a, mxt.b"`` → ``["mxt.a", "mxt.b"]``.

    Raises
    ------
    BadInput
        A subject with an empty token, whitespace, or a misplaced wildcard.
    """
    subjects = [part.strip() for part in text.split(",") if part.strip()]
    for subject in subjects:
        tokens = subject.split(".")
        if not all(_SUBJECT_TOKEN.match(token) for token in tokens) or ">" in tokens[:-1]:
            raise BadInput(
                f"topic {subject!r} is not a NATS subject (dot-separated tokens without "
                "spaces; '*' a whole token; '>' only as the last token)"
            )
    return subjects


def parse_routes(text: str) -> list[Route]:
    """Routes from ``com.mxt.routes``: ``"GET /a/{x}; POST /a"`` → two :class:`Route`.

    Raises
    ------
    BadInput
        An entry that is not ``METHOD /path``, an unknown method, a malformed
        segment, a repeated parameter or a repeated route.
    """
    routes: list[Route] = []
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        method, _, path = entry.partition(" ")
        route = Route(method.upper(), path.strip())
        _check_route(entry, route)
        if route in routes:
            raise BadInput(f"{ROUTES_ANNOTATION} lists {entry!r} twice")
        routes.append(route)
    return routes


def _check_route(entry: str, route: Route) -> None:
    """Raise :class:`BadInput` unless ``route`` is a valid method and path template."""
    if route.method not in ROUTE_METHODS:
        raise BadInput(
            f"{ROUTES_ANNOTATION} entry {entry!r}: method must be one of "
            f"{', '.join(ROUTE_METHODS)}, as in 'GET /path/{{parameter}}'"
        )
    segments = route.path.split("/")
    if not route.path.startswith("/") or route.path == "/":
        raise BadInput(f"{ROUTES_ANNOTATION} entry {entry!r}: path must start with '/'")
    bad = [segment for segment in segments[1:] if not _ROUTE_SEGMENT.match(segment)]
    if bad:
        raise BadInput(
            f"{ROUTES_ANNOTATION} entry {entry!r}: segment {bad[0]!r} is neither a plain "
            "name nor a whole '{parameter}'"
        )
    parameters = route.parameters
    if len(set(parameters)) != len(parameters):
        raise BadInput(f"{ROUTES_ANNOTATION} entry {entry!r}: a parameter is repeated")


def parse_delivery(text: str) -> str:
    """A ``com.mxt.topic-delivery`` value: ``queued`` or ``direct`` (any case).

    Raises
    ------
    BadInput
        For any other value.
    """
    value = text.strip().lower()
    if value not in TOPIC_DELIVERIES:
        raise BadInput(
            f"{DELIVERY_ANNOTATION} must be one of {', '.join(TOPIC_DELIVERIES)}, not {text!r}"
        )
    return value


def parse_flag(name: str, text: str) -> bool:
    """``"true"`` / ``"false"`` (any case) as a bool.

    Raises
    ------
    BadInput
        Naming ``name`` when the text is neither.
    """
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise BadInput(f"{name} must be 'true' or 'false', not {text!r}")
    return lowered == "true"


def parse_count(name: str, text: str | None, default: int) -> int:
    """A non-negative integer label, or ``default`` when absent.

    Raises
    ------
    BadInput
        Naming ``name`` when the text is not a non-negative integer.
    """
    if text is None:
        return default
    if not text.strip().isdigit():
        raise BadInput(f"{name} must be a non-negative integer, not {text!r}")
    return int(text)


def _parse_yaml(text: str) -> Any:
    """The YAML document, duplicate keys refused."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no object tags
    except StackError:
        raise
    except yaml.YAMLError as error:
        raise StackError(f"stack file is not valid YAML: {error}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key repeated in one mapping (a duplicate function)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise StackError(
                    f"stack file: key {key!r} appears twice in one mapping "
                    f"(line {key_node.start_mark.line + 1}); function names must be unique"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(problem: Mapping[str, Any]) -> str:
    """A pydantic error as ``function 'echo': key 'labels.x': message``."""
    location = [str(part) for part in problem["loc"]]
    prefix = ""
    if len(location) >= 2 and location[0] == "functions":
        prefix, location = f"function {location[1]!r}: ", location[2:]
    key = ".".join(location) or "(top level)"
    if problem["type"] == "extra_forbidden":
        return f"{prefix}unknown key {key!r}"
    if problem["type"] == "missing":
        return f"{prefix}missing key {key!r}"
    return f"{prefix}key {key!r}: {problem['msg']}"


def _check_stack(stack: Stack) -> list[str]:
    """Problems the schema cannot see: names, folders, files, annotations, labels."""
    problems = [
        f"configuration.copy: {entry!r} does not exist in {stack.directory}"
        for entry in stack.configuration.copy_paths
        if not (stack.directory / entry).exists()
    ]
    languages = {template.name for template in stack.configuration.templates}
    for name, function in stack.functions.items():
        function._name = name
        function._directory = stack.directory
        problems += [f"function {name!r}: {p}" for p in _check_function(function, languages)]
    return problems


def _check_function(function: Function, languages: set[str]) -> list[str]:
    """Problems of one function, without its name prefix."""
    problems = []
    name = function.name
    if not FUNCTION_NAME.match(name) or len(name) > FUNCTION_NAME_MAX_LENGTH:
        problems.append(
            "bad name: a function name is lower-case letters, digits and '-', starting "
            f"and ending with a letter or digit, at most {FUNCTION_NAME_MAX_LENGTH} characters"
        )
    template_dir = function._directory / "template" / function.lang
    if (
        function.lang not in languages
        and function.lang != "dockerfile"
        and not template_dir.is_dir()
    ):
        problems.append(
            f"key 'lang': template {function.lang!r} is neither in configuration.templates "
            f"nor in {template_dir.parent}"
        )
    if not function.handler_dir.is_dir():
        problems.append(f"key 'handler': folder {function.handler_dir} does not exist")
    elif (
        function.lang in PYTHON_HANDLER_LANGS
        and not (function.handler_dir / "handler.py").is_file()
    ):
        problems.append(f"key 'handler': {function.handler_dir} has no handler.py")
    problems += _load_environment_files(function)
    for check in (
        lambda: function.topics,
        lambda: function.topic_delivery,
        lambda: function.routes,
        lambda: function.write_protected,
        lambda: parse_access(function.annotations.get(ACCESS_ANNOTATION), False),
        lambda: _check_scale(function),
    ):
        try:
            check()
        except BadInput as error:
            problems.append(error.reason)
    return problems


def _check_scale(function: Function) -> None:
    """Raise :class:`BadInput` unless 1 ≤ scale max and scale min ≤ scale max."""
    low, high = function.scale_min, function.scale_max
    if high < 1 or low > high:
        raise BadInput(
            f"labels {SCALE_MIN_LABEL}={low} and {SCALE_MAX_LABEL}={high}: "
            "need max ≥ 1 and min ≤ max"
        )


def _load_environment_files(function: Function) -> list[str]:
    """Read ``environment_file`` entries (YAML with an ``environment`` mapping), as faas-cli."""
    problems = []
    merged: dict[str, str] = {}
    for entry in function.environment_file:
        file = function._directory / entry
        try:
            document = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as error:
            problems.append(f"key 'environment_file': cannot read {entry!r}: {error}")
            continue
        environment = document.get("environment") if isinstance(document, dict) else None
        if not isinstance(environment, dict):
            problems.append(
                f"key 'environment_file': {entry!r} has no 'environment' mapping at its top"
            )
            continue
        merged.update({str(k): str(_scalar_text(v)) for k, v in environment.items()})
    function._file_environment = merged
    return problems


def _stack_error(path: str | os.PathLike[str], problems: list[str]) -> StackError:
    """One error listing every problem of the file."""
    return StackError(f"{path}: " + "; ".join(problems), problems=problems)
