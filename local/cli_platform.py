"""`mxt` commands of the platform: up, down, status, ls, invoke, logs, worker, dead-letters.

The client commands find the running stack through its state file in the data
directory (``--data-dir`` or ``MXT_DATA_DIR``), or talk to ``--gateway`` / the
``MXT_GATEWAY_URL`` of a deployed gateway, with the admin password from the secrets
directory, or as another user: ``MXT_USER`` with its password in the file
``MXT_PASSWORD_FILE`` (docs/security.md).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="state directory of the embedded stack (default: MXT_DATA_DIR or the per-user one)",
)
GATEWAY_OPTION = click.option(
    "--gateway", default=None, help="gateway URL (default: the running stack's, MXT_GATEWAY_URL)"
)


def _data_dir(data_dir: Path | None) -> Path:
    from storage.settings import default_data_dir

    env = os.environ.get("MXT_DATA_DIR")
    return (data_dir or (Path(env) if env else default_data_dir())).resolve()


class Client:
    """A small synchronous client of the gateway for the CLI."""

    def __init__(self, data_dir: Path | None, gateway: str | None) -> None:
        from local.stack import read_state

        self.data_dir = _data_dir(data_dir)
        state = read_state(self.data_dir)
        self.url = (
            gateway
            or (state or {}).get("gateway_url")
            or os.environ.get("MXT_GATEWAY_URL", "http://127.0.0.1:8080")
        ).rstrip("/")
        secrets = Path(os.environ.get("MXT_SECRETS_DIR") or self.data_dir / "secrets")
        self.user = os.environ.get("MXT_USER") or "admin"
        given = os.environ.get("MXT_PASSWORD_FILE")
        self.password_file = Path(given) if given else secrets / "basic-auth-password"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = 60.0,
    ) -> Any:
        """Send a request with basic auth; the open response (raises on HTTP errors)."""
        from gateway.auth import basic_auth_header

        headers = dict(headers or {})
        if self.password_file.exists():
            password = self.password_file.read_text().strip()
            headers["Authorization"] = basic_auth_header(password, self.user)
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise click.ClickException(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise click.ClickException(f"gateway {self.url} unreachable: {exc.reason}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON request and its decoded answer (``None`` for an empty body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self.request(method, path, data, headers) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


@click.command()
@click.option("--port", default=8080, show_default=True, help="the gateway's TCP port")
@DATA_DIR_OPTION
@click.option("--nats-url", default=None, help="use this NATS server (default: start one)")
@click.option(
    "--stack",
    "stack_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("stack.yml"),
    show_default=True,
    help="the OpenFaaS stack file to serve",
)
def up(port: int, data_dir: Path | None, nats_url: str | None, stack_file: Path) -> None:
    """Start the embedded stack (NATS, functions, worker, connector, gateway) until Ctrl-C."""
    from local.stack import run_stack

    nats = nats_url or os.environ.get("MXT_NATS_URL")
    sys.exit(run_stack(port, _data_dir(data_dir), nats, stack_file))


@click.command()
@DATA_DIR_OPTION
def down(data_dir: Path | None) -> None:
    """Stop the running stack gracefully (drain, then every child process)."""
    from local.stack import stop_stack

    if not stop_stack(_data_dir(data_dir)):
        raise click.ClickException(f"no stack runs on {_data_dir(data_dir)}")
    click.echo("stopped")


@click.command()
@DATA_DIR_OPTION
def status(data_dir: Path | None) -> None:
    """Whether the stack runs, where, and how many functions are ready."""
    from local.stack import read_state

    state = read_state(_data_dir(data_dir))
    if state is None:
        raise click.ClickException(f"no stack runs on {_data_dir(data_dir)}")
    client = Client(data_dir, None)
    functions = client.json("GET", "/system/functions")
    ready = sum(1 for f in functions if f["availableReplicas"] > 0)
    click.echo(f"gateway   {state['gateway_url']}  (pid {state['pid']})")
    click.echo(f"nats      {state['nats_url']}")
    click.echo(f"data dir  {state['data_dir']}")
    click.echo(f"stack     {state['stack_file']}")
    click.echo(f"functions {ready} of {len(functions)} with a ready replica")


@click.command(name="ls")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def list_functions(data_dir: Path | None, gateway: str | None) -> None:
    """List the functions with their replicas and invocation counts."""
    functions = Client(data_dir, gateway).json("GET", "/system/functions")
    click.echo(f"{'Function':<32} {'Invocations':>11} {'Replicas':>9} {'Ready':>6}")
    for f in sorted(functions, key=lambda f: f["name"]):
        click.echo(
            f"{f['name']:<32} {f['invocationCount']:>11} {f['replicas']:>9}"
            f" {f['availableReplicas']:>6}"
        )


@click.command()
@click.argument("name")
@click.option("--async", "is_async", is_flag=True, help="queue the call (202 and a call id)")
@click.option("--data", default=None, help="request body: JSON text, or - for standard input")
@click.option("--path", default="", help="sub-path after the function name")
@click.option("--callback-url", default=None, help="where the async answer is POSTed")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def invoke(
    name: str,
    is_async: bool,
    data: str | None,
    path: str,
    callback_url: str | None,
    data_dir: Path | None,
    gateway: str | None,
) -> None:
    """Invoke a function through the gateway and print its answer (or the call id)."""
    body = sys.stdin.buffer.read() if data == "-" else (data or "").encode()
    headers = {"Content-Type": "application/json"}
    if callback_url:
        headers["X-Callback-Url"] = callback_url
    route = "async-function" if is_async else "function"
    target = f"/{route}/{name}" + (f"/{path.lstrip('/')}" if path else "")
    with Client(data_dir, gateway).request("POST", target, body, headers, None) as resp:
        if is_async:
            click.echo(resp.headers["X-Call-Id"])
            return
        for chunk in iter(lambda: resp.read(65536), b""):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@click.command()
@click.option("--function", "name", required=True, help="the function")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--tail", type=int, default=None, help="only the last N lines")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def logs(
    name: str, follow: bool, tail: int | None, data_dir: Path | None, gateway: str | None
) -> None:
    """Print a function's captured output (as ``faas-cli logs`` does)."""
    query = f"?name={name}&follow={'true' if follow else 'false'}"
    if tail is not None:
        query += f"&tail={tail}"
    with Client(data_dir, gateway).request("GET", "/system/logs" + query, timeout=None) as resp:
        for raw in resp:
            line = json.loads(raw)
            click.echo(f"{line['timestamp']} {line['instance']} {line['text']}")


@click.command()
@click.option("--nats-url", default=None, help="NATS server (default: the running stack's)")
@DATA_DIR_OPTION
@GATEWAY_OPTION
@click.option("--concurrency", type=int, default=None, help="calls run at once")
def worker(
    nats_url: str | None, data_dir: Path | None, gateway: str | None, concurrency: int | None
) -> None:
    """Run one more queue worker (scale-out) beside a running gateway, until Ctrl-C."""
    import asyncio

    from gateway.auth import SecretError, read_platform_token
    from gateway.settings import GatewaySettings
    from gateway.worker import run_standalone
    from local.stack import read_state

    client = Client(data_dir, gateway)
    state = read_state(client.data_dir) or {}
    overrides: dict[str, Any] = {"gateway_url": client.url, "data_dir": client.data_dir}
    if nats_url or state.get("nats_url"):
        overrides["nats_url"] = nats_url or state["nats_url"]
    if concurrency:
        overrides["worker_concurrency"] = concurrency
    settings = GatewaySettings(**overrides)
    try:
        token = read_platform_token(
            Path(os.environ.get("MXT_SECRETS_DIR") or client.data_dir / "secrets")
        )
    except SecretError as exc:
        raise click.ClickException(
            f"{exc} (a worker needs the stack's platform credential)"
        ) from None
    asyncio.run(run_standalone(settings, token))


@click.group(name="dead-letters", invoke_without_command=True)
@DATA_DIR_OPTION
@GATEWAY_OPTION
@click.pass_context
def dead_letters(ctx: click.Context, data_dir: Path | None, gateway: str | None) -> None:
    """Async calls that failed for good: list them, or redrive one."""
    ctx.obj = Client(data_dir, gateway)
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_dead_letters)


@dead_letters.command(name="list")
@click.pass_obj
def list_dead_letters(client: Client) -> None:
    """List the dead letters, oldest first."""
    letters = client.json("GET", "/system/dead-letters")
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        call = letter["call"]
        click.echo(
            f"{call['call_id']}  {call['function']}  attempts {letter['attempts']}  "
            f"{letter['reason'][:120]}"
        )


@dead_letters.command(name="redrive")
@click.argument("call_id")
@click.pass_obj
def redrive_dead_letter(client: Client, call_id: str) -> None:
    """Queue a dead-lettered call again with its attempts reset."""
    answer = client.json("POST", f"/system/dead-letters/{call_id}/redrive", {})
    click.echo(f"redriven {answer['call_id']} ({answer['function']})")


COMMANDS: list[click.Command] = [
    up,
    down,
    status,
    list_functions,
    invoke,
    logs,
    worker,
    dead_letters,
]
