"""OpenFaaS entry point of the python3-mxt template.

of-watchdog (http mode) starts ``python index.py`` and forwards every request to
``upstream_url``; this serves the function folder next to this file (``function/``,
where faas-cli puts the handler) with the MXT runtime on that address.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from gateway.runtime.__main__ import main

# Kubernetes names a function's pods <function>-<replicaset hash>-<pod hash>.
_POD_NAME = re.compile(r"^(?P<function>[a-z0-9-]+?)-[a-z0-9]{6,10}-[a-z0-9]{5}$")


def function_name() -> str:
    """The function's name: ``MXT_FUNCTION_NAME``, else from the pod's host name."""
    explicit = os.environ.get("MXT_FUNCTION_NAME")
    if explicit:
        return explicit
    match = _POD_NAME.match(os.environ.get("HOSTNAME", ""))
    return match.group("function") if match else "function"


def runtime_arguments() -> list[str]:
    """Command line of ``gateway.runtime``: the handler folder on the watchdog's upstream."""
    # of-watchdog names its settings in lower case
    upstream = urlsplit(os.environ.get("upstream_url", "http://127.0.0.1:5000"))  # noqa: SIM112
    return [
        "--handler",
        str(Path(__file__).resolve().parent / "function"),
        "--name",
        function_name(),
        "--host",
        upstream.hostname or "127.0.0.1",
        "--port",
        str(upstream.port or 5000),
    ]


if __name__ == "__main__":
    sys.exit(main(runtime_arguments()))
