"""Resource routes (``com.mxt.routes``): the seed's REST paths served by functions.

``GET /mxt_configdb/programmes/{programme}`` on function ``configdb-get`` means: a
``GET`` on that path invokes the function with ``POST /`` and a JSON body merging the
path parameters, the query parameters and the request's JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.functions import FunctionSpec

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def compile_template(template: str) -> re.Pattern[str]:
    """A regex for a path template: ``{name}`` matches one segment, ``{name:path}`` the rest."""
    pattern, last = "", 0
    for match in _PARAM.finditer(template):
        pattern += re.escape(template[last : match.start()])
        segment = ".+" if match.group(2) else "[^/]+"
        pattern += f"(?P<{match.group(1)}>{segment})"
        last = match.end()
    pattern += re.escape(template[last:])
    return re.compile(f"^{pattern}/?$")


def route_prefix(template: str) -> str:
    """The first path segment of a template (``/mxt_configdb``), which the route owns."""
    return "/" + template.strip("/").split("/", 1)[0]


@dataclass(frozen=True)
class ResourceRoute:
    """One method and path template served by one function."""

    method: str
    template: str
    function: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class RouteMatch:
    """The outcome of looking a request up in the table."""

    route: ResourceRoute | None
    params: dict[str, str]
    # the path is under a prefix that functions own (unknown path → 404, wrong method → 405)
    known_prefix: bool
    allowed_methods: tuple[str, ...] = ()


class RouteTable:
    """Every resource route of the deployed functions, rebuilt when they change."""

    def __init__(self, specs: Iterable[FunctionSpec] = ()) -> None:
        self.routes: list[ResourceRoute] = []
        self.prefixes: set[str] = set()
        for spec in specs:
            for method, template in spec.routes:
                self.routes.append(
                    ResourceRoute(method, template, spec.name, compile_template(template))
                )
                self.prefixes.add(route_prefix(template))
        # literal segments before parameters: /runs/latest wins over /runs/{id}
        self.routes.sort(key=lambda r: (r.template.count("{"), -len(r.template)))

    def match(self, method: str, path: str) -> RouteMatch:
        """The route serving ``method path``; HEAD is served by GET routes."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return RouteMatch(route, found.groupdict(), True)
            allowed.append(route.method)
        known = route_prefix(path) in self.prefixes
        return RouteMatch(None, {}, known, tuple(sorted(set(allowed))))
