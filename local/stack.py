"""The embedded stack: ``mxt up`` in one process tree, and :class:`EmbeddedStack` for tests.

``run_stack`` starts nats-server from the wheel (unless a NATS URL is given) and keeps
it running (``local.natsd.NatsSupervisor``: restarted on the same port when it dies), makes
the secrets directory and a random admin password on first start, writes a state
file (``DATA_DIR/mxt-up.json``) for ``mxt down/status/ls``, and serves the gateway,
the local provider, the queue worker and the topic connector on one port until
SIGTERM or Ctrl-C, then drains and stops every child.

``python -m local.stack --port P --data-dir D --stack FILE [--nats-url URL]`` is the
same as ``mxt up``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.auth import (
    PLATFORM_TOKEN_FILE,
    Role,
    SecretError,
    UserEntry,
    basic_auth_header,
    ensure_password,
    ensure_secret,
    hash_password,
    platform_headers,
    read_password,
    read_platform_token,
    read_users,
    write_users,
)
from gateway.lifetimes import die_with_parent
from gateway.natsconn import (
    ensure_nats_password,
    read_nats_password,
    url_with_credentials,
    url_without_credentials,
)
from gateway.settings import GatewaySettings
from local.natsd import NatsServer, NatsSupervisor, free_port
from storage.settings import default_data_dir

STATE_FILE = "mxt-up.json"


def write_stack_file(path: Path, functions: dict[str, dict[str, Any]]) -> Path:
    """Write a minimal ``stack.yml`` listing ``functions`` (entries as in the stack file).

    For tests and benchmarks that serve only the functions they need.
    """
    import yaml

    document = {
        "version": 1.0,
        "provider": {"name": "openfaas"},
        "configuration": {"templates": [{"name": "python3-mxt"}]},
        "functions": functions,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def state_path(data_dir: Path) -> Path:
    """Where a running stack describes itself (pid, URLs, files)."""
    return data_dir / STATE_FILE


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The state of the stack running on ``data_dir``, or ``None`` when none runs."""
    try:
        state = json.loads(state_path(data_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        return state if _running(int(state["pid"])) else None
    except (KeyError, ValueError):
        return None


def run_stack(
    port: int = 8080,
    data_dir: Path | None = None,
    nats_url: str | None = None,
    stack_file: Path = Path("stack.yml"),
    host: str = "127.0.0.1",
    announce: bool = True,
) -> int:
    """Serve the whole stack until SIGTERM/SIGINT; the exit status.

    Parameters
    ----------
    port
        The gateway's TCP port (every path on one port).
    data_dir
        State root (``MXT_DATA_DIR`` layout); the per-user default when omitted.
    nats_url
        An existing NATS server with JetStream; a private one is started when omitted.
    """
    import uvicorn

    from gateway.app import GatewayApp
    from gateway.platform import Platform
    from gateway.stack import StackError, load_stack

    try:
        load_stack(stack_file)  # a bad stack file stops the start; later edits do not
    except StackError as exc:
        print(f"mxt up: {exc.reason}", file=sys.stderr)
        return 2
    if not _port_free(host, port):
        print(
            f"mxt up: port {port} on {host} is in use (choose another with --port)", file=sys.stderr
        )
        return 1
    data_dir = (data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if read_state(data_dir) is not None:
        print(f"a stack already runs on {data_dir} (mxt down first)", file=sys.stderr)
        return 1
    secrets_dir = Path(os.environ.get("MXT_SECRETS_DIR") or data_dir / "secrets")
    password_file, created = ensure_password(secrets_dir)
    ensure_secret(secrets_dir, PLATFORM_TOKEN_FILE)
    try:  # an empty or unreadable secret stops the start: it never opens the door
        read_password(secrets_dir)
        read_platform_token(secrets_dir)
        read_users(secrets_dir)
    except SecretError as exc:
        print(f"mxt up: {exc}", file=sys.stderr)
        return 2
    if not nats_url:
        stop_stale_nats(data_dir / "nats")
    try:  # an empty bus password stops the start too: never an open bus by mistake
        nats_password = None if nats_url else ensure_nats_password(secrets_dir)
    except ValueError as exc:
        print(f"mxt up: {exc}", file=sys.stderr)
        return 2
    nats = (
        None
        if nats_url
        else NatsServer(data_dir / "nats", password=nats_password, config_dir=secrets_dir).start()
    )
    # a dead or wedged server is reaped and started again on the same port and store
    supervisor = NatsSupervisor(nats).start() if nats is not None else None
    gateway_url = f"http://{host}:{port}"
    # the function processes and mounted apps read these from their environment
    os.environ.update(
        MXT_DATA_DIR=str(data_dir),
        MXT_SECRETS_DIR=str(secrets_dir),
        MXT_NATS_URL=nats_url or nats.url,
        MXT_GATEWAY_URL=gateway_url,
    )
    settings = GatewaySettings(stack_file=stack_file.resolve(), host=host, port=port)
    state = {
        "pid": os.getpid(),
        "gateway_url": gateway_url,
        "nats_url": url_without_credentials(settings.nats_url),  # never a password
        "data_dir": str(data_dir),
        "stack_file": str(settings.stack_file),
        "password_file": str(password_file),
        "started_at": time.time(),
    }
    state_path(data_dir).write_text(json.dumps(state, indent=2))
    if announce:
        made = "created" if created else "kept"
        shown = url_without_credentials(settings.nats_url)
        print(f"mxt: gateway {gateway_url}  nats {shown}", flush=True)
        print(f"mxt: admin password {made} in {password_file}", flush=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler the
    # process would die there, before the finally below stops nats-server
    previous = signal.signal(signal.SIGTERM, _exit_after_shutdown)
    try:
        server = uvicorn.Server(
            uvicorn.Config(
                GatewayApp(Platform(settings)),
                host=host,
                port=port,
                loop="uvloop",
                http="httptools",
                access_log=False,
                server_header=False,
                # the gateway sets X-Forwarded-* itself; uvicorn's middleware costs every call
                proxy_headers=False,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=10,
            )
        )
        server.run()
        return 0 if server.started else 1
    except KeyboardInterrupt:  # Ctrl-C: uvicorn drained already, then re-raised SIGINT
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            state_path(data_dir).unlink()
        if supervisor is not None:
            supervisor.stop()
        signal.signal(signal.SIGTERM, previous)


def _port_free(host: str, port: int) -> bool:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        # as uvicorn binds: a port in TIME_WAIT after the last stack is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def stop_stale_nats(store_dir: Path) -> list[int]:
    """Stop nats-servers left on ``store_dir`` by a stack that was killed outright.

    Two servers must never share one JetStream store. Function processes and the
    private nats-server die with the stack (parent-death signal); this catches a
    server left by another route (a stack of an older version, a server started by hand).

    Returns
    -------
    list of int
        The process ids stopped.
    """
    import psutil

    stopped = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "nats-server" in (proc.info["name"] or "") and str(store_dir) in cmdline:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
                proc.wait(10)
                stopped.append(proc.info["pid"])
    return stopped


def stop_stack(data_dir: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the stack running on ``data_dir`` and wait until it is gone.

    Returns
    -------
    bool
        Whether a stack was running.
    """
    state = read_state(data_dir)
    if state is None:
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an exited child its parent has not reaped yet does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class EmbeddedStack:
    """A whole stack in a child process, on free ports in a data directory of its own.

    Used by tests (here and in later parts) and by benchmarks::

        with EmbeddedStack("tests/gateway/stack.yml", tmp_path) as stack:
            requests.post(stack.url + "/function/echo", ...)

    Parameters
    ----------
    stack_file
        The ``stack.yml`` to serve (a temporary one listing only what a test needs).
    data_dir
        State directory (created); secrets, logs, NATS data and SQLite live there.
    nats_url
        Use this NATS server instead of starting one.
    env
        Extra environment for the stack and its functions (``MXT_*`` settings).
    """

    def __init__(
        self,
        stack_file: str | Path,
        data_dir: str | Path,
        nats_url: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.stack_file = Path(stack_file).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self._nats_url = nats_url
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        """The admin password."""
        return read_password(self.data_dir / "secrets")

    @property
    def auth(self) -> tuple[str, str]:
        """``(user, password)`` for basic auth."""
        return ("admin", self.password)

    @property
    def auth_header(self) -> str:
        """The ``Authorization`` header value."""
        return basic_auth_header(self.password)

    @property
    def platform_headers(self) -> dict[str, str]:
        """The header with the platform's credential (what the stack's own parts send)."""
        return platform_headers(read_platform_token(self.data_dir / "secrets"))

    def add_user(self, name: str, role: str, password: str) -> dict[str, str]:
        """Add (or replace) a user of the stack; its ``Authorization`` header.

        The gateway reads the users file again within a second.
        """
        secrets_dir = self.data_dir / "secrets"
        users = read_users(secrets_dir)
        users[name] = UserEntry(name, Role.parse(role), hash_password(password))
        write_users(secrets_dir, users)
        return {"Authorization": basic_auth_header(password, name)}

    @property
    def nats_url(self) -> str:
        """The NATS server the stack uses, with the bus credentials as userinfo.

        ``nats://mxt:<password>@127.0.0.1:<port>`` for the stack's own server (the
        state file has the URL without them); the URL given to the constructor as is.
        """
        if self._nats_url:
            return self._nats_url
        state = read_state(self.data_dir)
        if state is None:
            raise RuntimeError("the stack is not running")
        url = str(state["nats_url"])
        secrets_dir = Path(self.env.get("MXT_SECRETS_DIR") or self.data_dir / "secrets")
        password = read_nats_password(secrets_dir)
        return url_with_credentials(url, password) if password else url

    @property
    def log_path(self) -> Path:
        """The stack process's own output."""
        return self.data_dir / "stack.log"

    def start(self, timeout: float = 30.0, ready: bool = True) -> EmbeddedStack:
        """Start and wait until ``/healthz`` answers (and every function, if ``ready``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "local.stack", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), "--stack", str(self.stack_file)]
        if self._nats_url:
            cmd += ["--nats-url", self._nats_url]
        env = dict(os.environ)
        # a NATS server named by the caller's environment is not this stack's own
        env.pop("MXT_NATS_URL", None)
        env.update(MXT_SECRETS_DIR=str(self.data_dir / "secrets"), **self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=str(self.stack_file.parent),
                # a test or benchmark killed mid-way takes its stack with it (graceful stop)
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"stack exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"stack not healthy after {timeout} s")
            time.sleep(0.05)
        if ready:
            self.wait_functions_ready(max(1.0, deadline - time.monotonic()))
        return self

    def replica_pids(self, function: str) -> list[int]:
        """Process ids of the function's replicas (for fault tests that kill one)."""
        return [
            proc.pid for proc, cmd in self._replicas() if cmd[cmd.index("--name") + 1] == function
        ]

    def replica_urls(self, function: str) -> list[str]:
        """Direct URLs of the function's replicas (benchmarks compare with the gateway)."""
        return [
            f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}/"
            for _, cmd in self._replicas()
            if cmd[cmd.index("--name") + 1] == function
        ]

    def _replicas(self) -> list[tuple[Any, list[str]]]:
        import psutil

        if self.process is None:
            raise RuntimeError("the stack is not running")
        found = []
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = proc.cmdline()
                if "gateway.runtime" in cmd and "--name" in cmd and "--port" in cmd:
                    found.append((proc, cmd))
        return found

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200: the gateway, its NATS connection with
        JetStream, the database and the object store are up (503 otherwise)."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:  # HTTPError (503) included
            return False

    def health(self) -> tuple[int, dict[str, Any]]:
        """``GET /healthz`` with ``Accept: application/json``: the status and the report."""
        request = urllib.request.Request(
            self.url + "/healthz", headers={"Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def functions(self) -> list[dict[str, Any]]:
        """``GET /system/functions``."""
        request = urllib.request.Request(
            self.url + "/system/functions", headers={"Authorization": self.auth_header}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_functions_ready(self, timeout: float = 30.0) -> None:
        """Wait until every function with replicas wanted has them all available."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [
                f["name"] for f in self.functions() if f["availableReplicas"] < f["replicas"]
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"functions not ready after {timeout} s: {pending}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL the group if it lingers; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m local.stack``: the same as ``mxt up``."""
    parser = argparse.ArgumentParser(prog="python -m local.stack")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--nats-url", default=os.environ.get("MXT_NATS_URL"))
    parser.add_argument("--stack", type=Path, default=Path("stack.yml"))
    args = parser.parse_args(argv)
    return run_stack(args.port, args.data_dir, args.nats_url, args.stack)


if __name__ == "__main__":
    sys.exit(main())
