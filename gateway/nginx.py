"""An nginx configuration for a deployment in front of the gateway (``mxt proxy nginx``).

nginx only forwards path prefixes: the gateway discovers functions and routes itself,
so a function deployed later is reachable through nginx without a reload. Each prefix
of the proxy table gets its own limits: request body size, timeouts, and no response
buffering where responses stream (the websocket, followed logs as server-sent events).

Before any proxying, nginx refuses (400, its own JSON answer) a request whose raw
path climbs or has an empty segment: ``..`` and ``.`` segments, also percent-encoded
once or twice (``%2e%2e``, ``%2E.``, ``.%2e``, ``%252e``) or delimited by encoded
slashes or backslashes (``..%2f``), and ``//``. The check reads ``$request_uri``,
what the client sent: nginx's own ``$uri`` is already decoded and normalised and would
hide them. ``proxy_pass`` has no URI part, so the gateway receives the request URI
exactly as the client sent it (nginx neither decodes, normalises nor merges slashes on
the way); the gateway checks it again (``gateway.policy.safe_subpath``).

The full configuration uses paths relative to nginx's prefix, so it runs as is with::

    nginx -p /some/dir -c nginx.conf
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bricks.errors import BadInput

MIB = 1024 * 1024
#: the internal location answering refused paths (never reachable from outside)
REFUSED_LOCATION = "/.mxt-refused-path"
# A segment delimiter and a dot in the raw request URI: as sent, percent-encoded once
# or twice (nginx matches them case-insensitively: ~*). \x5c is a backslash.
_DELIM = r"(/|%2f|%252f|\x5c|%5c|%255c)"
_DOT = r"(\.|%2e|%252e)"
#: regexes on ``$request_uri`` (path part only: up to the first ``?``) refused with 400
REFUSED_PATHS = (
    # a "." or ".." segment, whatever its encoding
    rf"^[^?]*{_DELIM}{_DOT}{{1,2}}({_DELIM}|\?|$)",
    # an empty segment: "//", also with encoded slashes
    r"^[^?]*(/|%2f|%252f)(/|%2f|%252f)",
)
REFUSED_BODY = (
    '{"kind": "bad_input", "reason": "the path climbs or has an empty segment '
    '(a . or .. segment, //, or their percent-encoded forms): refused by the proxy"}'
)
#: headers on the answers nginx writes itself (the dashboard's own come from the gateway)
OWN_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
)


@dataclass(frozen=True)
class ProxyRule:
    """How nginx forwards one path prefix.

    Attributes
    ----------
    location
        The nginx ``location`` argument (``/mxt/``, or ``~ regex`` for a regex match).
    what
        The service behind it, written as a comment into the configuration.
    max_body_bytes
        Largest request body accepted (bytes); nginx answers 413 above it.
    read_timeout
        Seconds nginx waits between two reads from the gateway.
    streaming
        Responses flow to the client as they come (no buffering, no request buffering).
    websocket
        Forward the ``Upgrade`` handshake.
    """

    location: str
    what: str
    max_body_bytes: int = MIB
    read_timeout: float = 60.0
    streaming: bool = False
    websocket: bool = False


def proxy_rules(max_body_bytes: int = 64 * MIB, timeout: float = 60.0) -> list[ProxyRule]:
    """The proxy table (``ARCHITECTURE.md``, "Single entry point") with each prefix's limits.

    Parameters
    ----------
    max_body_bytes
        Body limit of sync invocations and uploads (bytes), the gateway's own limit.
    timeout
        Read timeout of ordinary requests (seconds), the gateway's upstream timeout.
    """
    hour = 3600.0
    return [
        # regexes first in meaning: nginx checks them after the longest prefix match
        ProxyRule(
            r"~ ^/mxt/runs/[^/]+/logs$", "run logs (follow: server-sent events)", MIB, hour, True
        ),
        ProxyRule("/system/logs", "function logs (follow streams)", MIB, hour, True),
        ProxyRule("/mxt/", "orchestrator: runs, launch, status, logs", MIB, timeout),
        ProxyRule("/mxt_configdb/", "configdb operations", MIB, timeout),
        ProxyRule("/mxt_missiondb/", "missiondb operations", 8 * MIB, timeout),
        ProxyRule("/caldb/", "CALDB operations and file downloads", max_body_bytes, timeout),
        ProxyRule("/mxt_gp_pipeline/", "GP programme entry point", MIB, timeout),
        ProxyRule("/mxt_cp_pipeline/", "CP programme entry point", MIB, timeout),
        ProxyRule("/mxt_too_pipeline/", "ToO programme entry point", MIB, timeout),
        ProxyRule("/mxt_websocket/", "live events (websocket)", MIB, hour, True, True),
        ProxyRule("/function/", "sync invocations and uploads", max_body_bytes, timeout, True),
        # async bodies travel in one NATS message (1 MiB)
        ProxyRule("/async-function/", "async invocations", MIB, timeout),
        ProxyRule("/system/", "OpenFaaS system API", MIB, timeout),
        ProxyRule("/ui/", "dashboard", MIB, timeout),
        ProxyRule("= /healthz", "gateway health", MIB, timeout),
        # Prefixes added to stack.yml later reach the gateway too (it answers JSON 404s).
        ProxyRule("/", "anything else: the gateway routes it or answers a JSON 404", MIB, timeout),
    ]


def with_stack_routes(rules: list[ProxyRule], stack_file: Path) -> list[ProxyRule]:
    """``rules`` plus a location for each route prefix of ``stack_file`` the table lacks.

    The catch-all location forwards such prefixes anyway; listing them documents them
    and gives them the ordinary limits.
    """
    from gateway.routes import route_prefix
    from gateway.stack import load_stack

    stack = load_stack(stack_file)
    known = {rule.location.rstrip("/") for rule in rules}
    extra: dict[str, str] = {}
    for function in stack.functions.values():
        for route in function.routes:
            prefix = route_prefix(route.path)
            if prefix not in known:
                extra.setdefault(prefix, function.name)
    catch_all = rules[-1]
    added = [
        ProxyRule(
            f"{prefix}/", f"routes of function {name} (stack.yml)", MIB, catch_all.read_timeout
        )
        for prefix, name in sorted(extra.items())
    ]
    return rules[:-1] + added + [catch_all]


def _size(nbytes: int) -> str:
    return f"{nbytes // MIB}m" if nbytes % MIB == 0 else f"{max(1, nbytes // 1024)}k"


def _location_block(rule: ProxyRule) -> list[str]:
    """The ``location`` block of one rule; proxy headers repeated, as nginx does not merge them."""
    lines = [
        f"        # {rule.what}",
        f"        location {rule.location} {{",
        # no URI part: the request URI goes upstream exactly as the client sent it
        "            proxy_pass http://mxt_gateway;",
        f"            client_max_body_size {_size(rule.max_body_bytes)};",
        f"            proxy_read_timeout {int(rule.read_timeout)}s;",
        f"            proxy_send_timeout {int(rule.read_timeout)}s;",
        "            proxy_set_header Host $http_host;",
        "            proxy_set_header X-Real-IP $remote_addr;",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "            proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    if rule.websocket:
        lines += [
            "            proxy_set_header Upgrade $http_upgrade;",
            "            proxy_set_header Connection $connection_upgrade;",
        ]
    else:
        # an empty Connection header keeps the upstream connections alive (keepalive pool)
        lines.append('            proxy_set_header Connection "";')
    if rule.streaming:
        lines += [
            "            proxy_buffering off;",
            "            proxy_request_buffering off;",
            "            proxy_cache off;",
        ]
    lines.append("        }")
    return lines


def gateway_address(gateway_url: str) -> str:
    """``host:port`` of the gateway URL nginx forwards to.

    Raises
    ------
    BadInput
        When the URL is not ``http://host[:port]`` (no path, query or other scheme).
    """
    parts = urlsplit(gateway_url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise BadInput(f"gateway URL {gateway_url!r}: expected http://host[:port]")
    if parts.query or parts.fragment:
        raise BadInput(f"gateway URL {gateway_url!r}: expected no query or fragment")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


def _own_headers(indent: str) -> list[str]:
    """``add_header`` lines of :data:`OWN_HEADERS` (``always``: on error answers too)."""
    return [f'{indent}add_header {name} "{value}" always;' for name, value in OWN_HEADERS]


def refusal_config() -> tuple[list[str], list[str], list[str]]:
    """The three parts of the climbing-path refusal: http-level map, server check, location.

    The map flags a raw request URI matching :data:`REFUSED_PATHS`; the server-level
    check (the rewrite phase, before any location) sends it to the internal location,
    which answers 400 with a JSON reason. Nothing of it reaches the gateway.
    """
    mapping = [
        "    # 1 when the raw request URI climbs or has an empty segment (see below)",
        "    map $request_uri $mxt_refused_path {",
        "        default 0;",
        *(f'        "~*{regex}" 1;' for regex in REFUSED_PATHS),
        "    }",
    ]
    check = [
        "        # The path as the client sent it ($request_uri, not nginx's normalised $uri)",
        "        # must not climb: '..' or '.' segments, encoded or not, and '//' are refused",
        "        # here, before any proxying. Slashes are not merged either: every location",
        "        # sees what the gateway will see.",
        "        merge_slashes off;",
        "        if ($mxt_refused_path) {",
        f"            rewrite ^ {REFUSED_LOCATION} last;",
        "        }",
    ]
    location = [
        "        # the answer to a refused path (internal: only the check above leads here)",
        f"        location = {REFUSED_LOCATION} {{",
        "            internal;",
        "            default_type application/json;",
        *_own_headers("            "),
        f"            return 400 '{REFUSED_BODY}\\n';",
        "        }",
    ]
    return mapping, check, location


def server_config(
    gateway_url: str, listen: int, rules: list[ProxyRule], server_name: str = "_"
) -> str:
    """The ``http``-level part: upgrade map, gateway upstream and the server block.

    This is what goes into ``/etc/nginx/conf.d/`` on a host that already runs nginx.

    Parameters
    ----------
    gateway_url
        The gateway (``http://host:port``).
    listen
        Port nginx listens on.
    rules
        Prefixes and their limits (:func:`proxy_rules`).
    server_name
        The ``server_name`` (``_``: any).
    """
    if not 0 < listen < 65536:
        raise BadInput(f"listen port {listen}: expected 1-65535")
    mapping, check, refused = refusal_config()
    lines = [
        "    map $http_upgrade $connection_upgrade {",
        "        default upgrade;",
        "        ''      close;",
        "    }",
        "",
        *mapping,
        "",
        "    upstream mxt_gateway {",
        f"        server {gateway_address(gateway_url)};",
        "        keepalive 32;",
        "    }",
        "",
        "    server {",
        f"        listen {listen};",
        f"        server_name {server_name};",
        "        proxy_http_version 1.1;",
        "        proxy_connect_timeout 5s;",
        "",
        *check,
        "",
        *refused,
        "",
        "        location = / {",
        *_own_headers("            "),
        "            return 302 /ui/;",
        "        }",
        "",
    ]
    for rule in rules:
        lines += _location_block(rule) + [""]
    lines.append("    }")
    return "\n".join(lines) + "\n"


def nginx_config(gateway_url: str, listen: int, rules: list[ProxyRule]) -> str:
    """A complete ``nginx.conf`` whose files (pid, logs, temporaries) live under nginx's prefix.

    Parameters are those of :func:`server_config`.
    """
    header = [
        "# Generated by `mxt proxy nginx`: every prefix of the MXT proxy table to the gateway.",
        "# Run: nginx -p <this directory> -c nginx.conf   (functions deployed later need no",
        "# reload: the gateway discovers them, nginx only forwards prefixes)",
        "worker_processes auto;",
        "pid nginx.pid;",
        "error_log error.log warn;",
        "",
        "events {",
        "    worker_connections 1024;",
        "}",
        "",
        "http {",
        "    # upstream=-: nginx answered itself (a refused path, the redirect to /ui/)",
        "    log_format mxt '$remote_addr - $remote_user [$time_local] \"$request\" $status '",
        '                   \'$body_bytes_sent "$http_referer" "$http_user_agent" \'',
        "                   'upstream=$upstream_addr';",
        "    access_log access.log mxt;",
        "    default_type application/octet-stream;",
        "    client_body_temp_path tmp/body;",
        "    proxy_temp_path tmp/proxy;",
        "    fastcgi_temp_path tmp/fastcgi;",
        "    uwsgi_temp_path tmp/uwsgi;",
        "    scgi_temp_path tmp/scgi;",
        "",
    ]
    return "\n".join(header) + "\n" + server_config(gateway_url, listen, rules) + "}\n"


def write_config(path: Path, text: str) -> None:
    """Write the configuration and the temporary directories it names beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (path.parent / "tmp" / name).mkdir(parents=True, exist_ok=True)
    path.write_text(text)
