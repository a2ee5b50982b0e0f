"""Serve one function: ``python -m gateway.runtime --handler DIR --name NAME --host H --port P``.

This is the process contract of the local provider and of the OpenFaaS template.
The process exits with status 2 and one line on stderr when the handler cannot be
loaded or a setting in the environment is invalid; otherwise it serves until
SIGTERM or SIGINT, lets the calls in flight finish (``--graceful-seconds``), and exits
by that signal (uvicorn re-raises it, so the parent sees "terminated by SIGTERM").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.runtime.logs import configure_logging


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the runtime.

    Parameters
    ----------
    argv
        Arguments without the program name; ``sys.argv[1:]`` when omitted.
    """
    parser = argparse.ArgumentParser(
        prog="python -m gateway.runtime", description="Serve one MXT function over HTTP."
    )
    parser.add_argument("--handler", required=True, type=Path, help="function folder")
    parser.add_argument("--name", required=True, help="function name")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="TCP port to listen on")
    parser.add_argument(
        "--graceful-seconds",
        type=float,
        default=30.0,
        help="how long calls in flight may finish after SIGTERM, in seconds",
    )
    return parser.parse_args(argv)


#: where OpenFaaS mounts a function's secrets
OPENFAAS_SECRETS = Path("/var/openfaas/secrets")


def platform_token() -> str | None:
    """The credential calls must carry (``platform-token`` in the secrets directory).

    The secrets directory is ``MXT_SECRETS_DIR``, else ``$MXT_DATA_DIR/secrets``, else
    OpenFaaS's ``/var/openfaas/secrets``. ``MXT_PLATFORM_TOKEN_REQUIRED=false`` turns
    the check off, for a function that another gateway (OpenFaaS's, with its own auth
    and network policy) calls directly.

    Raises
    ------
    SecretError
        The check is on and the secret is missing or empty: the replica must not start.
    """
    from gateway.auth import read_platform_token

    if os.environ.get("MXT_PLATFORM_TOKEN_REQUIRED", "true").strip().lower() in (
        "false",
        "0",
        "no",
    ):
        return None
    directory = os.environ.get("MXT_SECRETS_DIR")
    if directory:
        return read_platform_token(Path(directory))
    data_dir = os.environ.get("MXT_DATA_DIR")
    return read_platform_token(Path(data_dir) / "secrets" if data_dir else OPENFAAS_SECRETS)


def main(argv: list[str] | None = None) -> int:
    """Load the handler and serve it; the process exit status.

    Parameters
    ----------
    argv
        Arguments without the program name.
    """
    arguments = parse_arguments(argv)
    from gateway.auth import SecretError
    from gateway.runtime.app import create_app
    from gateway.runtime.loader import HandlerLoadError

    try:
        configure_logging(arguments.name, os.environ.get("MXT_LOG_LEVEL", "INFO"))
        app = create_app(arguments.handler, arguments.name, platform_token=platform_token())
    except (HandlerLoadError, ValueError, SecretError) as error:
        print(f"mxt runtime: cannot serve function {arguments.name!r}: {error}", file=sys.stderr)
        return 2

    import uvicorn

    from gateway import heap

    heap.settle()  # the handler is imported: its heap stays out of later collections

    uvicorn.run(
        app,
        host=arguments.host,
        port=arguments.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=arguments.graceful_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
