"""The local provider: every function is a supervised process, like a container in OpenFaaS.

Each replica is ``python -m gateway.runtime --handler DIR --name NAME --host 127.0.0.1
--port PORT`` in its own process group (so Ctrl-C in a terminal reaches the stack, which
then drains in order) with a parent-death signal (so even a SIGKILLed stack leaves no
orphan). A replica is health-checked on ``GET /_/health`` before it takes traffic,
restarted with exponential backoff when it dies, and its output is captured into the
function's :class:`LogBook`. Replicas take calls round-robin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import aiohttp

from bricks.errors import BadInput
from gateway.functions import FunctionSpec
from gateway.lifetimes import die_with_parent
from gateway.logbook import LogBook
from gateway.settings import GatewaySettings

log = logging.getLogger("mxt.gateway.provider")

HEALTH_PATH = "/_/health"
LIVENESS_PERIOD = 5.0  # seconds between health checks of a running replica
LIVENESS_FAILURES = 3  # consecutive failed checks before a replica is restarted
STOP_GRACE = 5.0  # seconds a replica gets to exit after SIGTERM
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 0.2, 10.0, 30.0  # seconds


class FunctionUnavailable(Exception):
    """No replica of the function became ready in time (the gateway answers 503)."""


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """One process of a function, kept alive by :meth:`supervise`."""

    def __init__(self, deployment: Deployment, index: int) -> None:
        self.deployment = deployment
        self.index = index
        self.port = 0
        self.url = ""
        self.instance = f"{deployment.spec.name}-{index}"
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.restarts = 0
        # why the last run ended before the replica became ready (a broken handler)
        self.failure: str | None = None
        self._last_line = ""
        self._became_ready = False
        self._holds_slot = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start supervising (spawn now, respawn on death)."""
        self.task = asyncio.create_task(self.supervise(), name=f"replica {self.instance}")

    async def supervise(self) -> None:
        """Run the process; when it dies, restart it after a growing delay."""
        backoff = BACKOFF_FIRST
        while not self.stopping:
            started = time.monotonic()
            was_ready = False
            try:
                was_ready = await self._run_once()
            except Exception as exc:  # noqa: BLE001 - a spawn failure is retried like a crash
                log.exception("replica %s failed to start", self.instance)
                self._last_line = f"cannot start the process: {exc}"
            self._set_ready(False)
            if not was_ready and not self.stopping:
                self.failure = self._last_line or "the process exited before it was healthy"
                self.deployment.replica_changed()
            if self.stopping:
                return
            if time.monotonic() - started > BACKOFF_RESET:
                backoff = BACKOFF_FIRST
            self.restarts += 1
            self.deployment.book.add(
                "provider", f"replica {self.instance} exited; restarting in {backoff:.1f} s"
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _run_once(self) -> bool:
        """Run the process until it exits; whether it was ever ready."""
        spec = self.deployment.spec
        # a fresh port each run: the last one may have been taken while it was down
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # few processes start at once, so that forty starting functions do not starve
        # the gateway (and each other) of the CPU; the slot is freed once healthy
        await self.deployment.start_slots.acquire()
        self._holds_slot = True
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.deployment.command(self.port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(spec.workdir),
                env=self.deployment.environment(),
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        except BaseException:
            self._release_slot()
            raise
        pumps = [
            asyncio.create_task(self._pump(self.process.stdout)),
            asyncio.create_task(self._pump(self.process.stderr)),
        ]
        self._became_ready = False
        watch = asyncio.create_task(self._watch_health())
        try:
            await self.process.wait()
        finally:
            self._release_slot()
            watch.cancel()
            await asyncio.gather(*pumps, watch, return_exceptions=True)
        return self._became_ready

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.deployment.start_slots.release()

    async def _pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the reader's limit: keep its start
                line = await stream.read(65536)
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._last_line = text
            self.deployment.book.add(self.instance, text)

    async def _watch_health(self) -> None:
        """Mark the replica ready once healthy; restart it when it stops answering."""
        session = self.deployment.health_session
        deadline = time.monotonic() + self.deployment.settings.start_timeout
        # poll often at first (a warm start takes ~0.4 s), then less: 40 starting
        # functions polled every 50 ms would cost the gateway more than they save
        period = 0.05
        while not await self._healthy(session, timeout=1.0):
            if time.monotonic() > deadline:
                self.deployment.book.add("provider", f"{self.instance} never became healthy")
                self.kill()
                return
            await asyncio.sleep(period)
            period = min(period * 1.3, 0.5)
        self.failure = None
        self._became_ready = True
        self._release_slot()
        self._set_ready(True)
        failures = 0
        while True:
            await asyncio.sleep(LIVENESS_PERIOD)
            failures = 0 if await self._healthy(session, timeout=2.0) else failures + 1
            if failures >= LIVENESS_FAILURES:
                self.deployment.book.add("provider", f"{self.instance} stopped answering")
                self.kill()
                return

    async def _healthy(self, session: aiohttp.ClientSession, timeout: float) -> bool:
        try:
            async with session.get(
                self.url + HEALTH_PATH, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _set_ready(self, ready: bool) -> None:
        if self.ready != ready:
            self.ready = ready
            self.deployment.replica_changed()

    @property
    def pid(self) -> int | None:
        """The process id while the process runs."""
        if self.process is None or self.process.returncode is not None:
            return None
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send a signal to the replica's whole process group."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)

    def kill(self) -> None:
        """Kill the process now; the supervisor restarts it."""
        self.signal(signal.SIGKILL)

    async def stop(self) -> None:
        """Stop for good: SIGTERM, then SIGKILL after the grace period."""
        self.stopping = True
        self._set_ready(False)
        self.signal(signal.SIGTERM)
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), STOP_GRACE)
            except TimeoutError:
                self.kill()
                await self.process.wait()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Deployment:
    """A function and its replicas."""

    def __init__(
        self,
        spec: FunctionSpec,
        settings: GatewaySettings,
        health_session: aiohttp.ClientSession,
        extra_env: dict[str, str],
        start_slots: asyncio.Semaphore,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.health_session = health_session
        self.start_slots = start_slots
        self.extra_env = extra_env
        self.replicas: list[Replica] = []
        self.ready: list[Replica] = []
        self.invocations = 0
        self.created_at = time.time()
        self._next_index = 0
        self._rr = 0
        self._changed = asyncio.Event()
        self.book = LogBook(spec.name, settings.logs_dir / f"{spec.name}.log", settings.log_lines)

    def command(self, port: int) -> list[str]:
        """The command line of one replica."""
        return [
            sys.executable,
            "-m",
            "gateway.runtime",
            "--handler",
            str(self.spec.handler_path),
            "--name",
            self.spec.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    def environment(self) -> dict[str, str]:
        """The process environment: the stack's, then ours (``MXT_*``), which win."""
        env = dict(os.environ)
        env.update(self.spec.env)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def desired(self) -> int:
        """How many replicas are wanted now."""
        return len(self.replicas)

    def replica_changed(self) -> None:
        """Refresh the round-robin list and wake callers waiting for a replica."""
        self.ready = [r for r in self.replicas if r.ready]
        self._changed.set()
        self._changed = asyncio.Event()

    async def scale(self, count: int) -> None:
        """Start or stop replicas until ``count`` are wanted (0 allowed)."""
        while len(self.replicas) < count:
            replica = Replica(self, self._next_index)
            self._next_index += 1
            self.replicas.append(replica)
            replica.start()
        surplus = self.replicas[count:]
        self.replicas = self.replicas[:count]
        self.replica_changed()
        await asyncio.gather(*(r.stop() for r in surplus))

    def pick_ready(self) -> Replica | None:
        """The next ready replica, round-robin, without waiting."""
        ready = self.ready
        if not ready:
            return None
        self._rr += 1
        return ready[self._rr % len(ready)]

    async def pick(self, timeout: float) -> Replica:
        """The next ready replica; scales from zero and waits up to ``timeout`` seconds."""
        replica = self.pick_ready()
        if replica is not None:
            return replica
        if not self.replicas:
            await self.scale(max(1, self.spec.min_replicas))
        deadline = time.monotonic() + timeout
        while (replica := self.pick_ready()) is None:
            failures = [r.failure for r in self.replicas if r.failure]
            if failures and len(failures) == len(self.replicas):
                raise FunctionUnavailable(
                    f"function {self.spec.name!r} cannot start: {failures[-1][-500:]}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.replicas:
                raise FunctionUnavailable(
                    f"function {self.spec.name!r} has no ready replica after {timeout:.0f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return replica

    async def stop(self) -> None:
        """Stop every replica and close the log file."""
        await self.scale(0)
        self.book.close()


class LocalProvider:
    """Runs the functions of a stack file and of API deployments as local processes.

    Parameters
    ----------
    load_specs
        Reads the stack file and returns its functions; called at start and
        whenever the file's modification time changes.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        load_specs: Callable[[Path], Iterable[FunctionSpec]] | None = None,
    ) -> None:
        self.settings = settings
        self.load_specs = load_specs
        self.deployments: dict[str, Deployment] = {}
        self.listeners: list[Callable[[], None]] = []
        self.extra_env = {
            "MXT_GATEWAY_URL": settings.gateway_url,
            "MXT_NATS_URL": settings.nats_url,
            "MXT_DATA_DIR": str(settings.data_dir),
            "MXT_SECRETS_DIR": str(settings.secrets_path),
        }
        self._stack_mtime: float | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.start_slots = asyncio.Semaphore(
            settings.start_concurrency or max(8, 4 * (os.cpu_count() or 1))
        )
        self.health_session: aiohttp.ClientSession | None = None
        self.stack_error: str | None = None

    async def start(self, watch_period: float = 1.0) -> None:
        """Start the stack's functions (in parallel) and watch the stack file."""
        self.health_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        await self._restore_api_deployments()
        await self.reload_stack()
        if self.load_specs is not None:
            self._watcher = asyncio.create_task(self._watch(watch_period), name="stack watcher")

    async def wait_ready(self, timeout: float) -> list[str]:
        """Wait until every eagerly started function has a ready replica.

        Returns
        -------
        list of str
            The functions still without a ready replica when the time ran out.
        """
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n for n, d in self.deployments.items() if d.replicas and not d.ready]
            if not waiting or time.monotonic() > deadline:
                return waiting
            await asyncio.sleep(0.05)

    def changed(self) -> None:
        """Save the API deployments; tell listeners (routes, connector) of the change."""
        self._save_api_deployments()
        for listener in self.listeners:
            listener()

    @property
    def api_deployments_file(self) -> Path:
        """Where functions deployed through the API are kept across restarts."""
        return self.settings.data_dir / "deployments.json"

    def _save_api_deployments(self) -> None:
        requests = [
            d.spec.deploy_request
            for d in self.deployments.values()
            if d.spec.source == "api" and d.spec.deploy_request
        ]
        path = self.api_deployments_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(requests, indent=1))
        temporary.replace(path)

    async def _restore_api_deployments(self) -> None:
        """Deploy again what was deployed through the API before a restart."""
        try:
            requests = json.loads(self.api_deployments_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        for request in requests:
            try:
                spec = FunctionSpec.from_deploy_request(
                    request, self.settings.data_dir, self.deploy_roots()
                )
            except BadInput as exc:  # its handler folder is gone: say so, keep the rest
                log.error("API deployment not restored: %s", exc.reason)
                continue
            await self.deploy(spec)

    def deploy_roots(self) -> list[Path]:
        """Folders API deployments may take handlers from: ``MXT_DEPLOY_ROOTS`` and the
        folders holding the stack file's own function folders."""
        roots = [Path(p) for p in self.settings.deploy_roots.split(os.pathsep) if p.strip()]
        if self.load_specs is not None:
            try:
                specs = self.load_specs(self.settings.stack_file)
            except Exception:  # noqa: BLE001 - a broken stack file opens no folder
                specs = []
            roots += sorted({spec.handler_path.resolve().parent for spec in specs})
        return roots

    async def _watch(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                mtime = self.settings.stack_file.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime != self._stack_mtime:
                await self.reload_stack()

    async def reload_stack(self) -> None:
        """Read the stack file and reconcile: start new, stop removed, restart changed."""
        if self.load_specs is None:
            return
        try:
            self._stack_mtime = self.settings.stack_file.stat().st_mtime
            specs = list(self.load_specs(self.settings.stack_file))
        except Exception as exc:  # noqa: BLE001 - a bad edit keeps the running functions
            self.stack_error = f"{self.settings.stack_file}: {exc}"
            log.error("stack file not reloaded: %s", self.stack_error)
            return
        self.stack_error = None
        await self.reconcile(specs)

    async def reconcile(self, specs: Iterable[FunctionSpec]) -> None:
        """Make the stack's functions those of ``specs`` (API deployments stay)."""
        wanted = {spec.name: spec for spec in specs}
        removed = [
            name
            for name, d in self.deployments.items()
            if d.spec.source == "stack" and name not in wanted
        ]
        await asyncio.gather(
            *(self.remove(name) for name in removed),
            *(self.deploy(spec) for spec in wanted.values()),
        )

    async def deploy(self, spec: FunctionSpec) -> bool:
        """Deploy or update a function; unchanged specs are left running.

        Returns
        -------
        bool
            Whether anything was started or restarted.
        """
        async with self._lock:
            current = self.deployments.get(spec.name)
            if current is not None and current.spec.fingerprint() == spec.fingerprint():
                current.spec.source = spec.source if spec.source == "api" else current.spec.source
                return False
            replicas = spec.min_replicas
            if current is not None:
                replicas = current.desired
                del self.deployments[spec.name]
            deployment = Deployment(
                spec, self.settings, self.health_session, self.extra_env, self.start_slots
            )
            self.deployments[spec.name] = deployment
        if current is not None:
            await current.stop()
        lazy = spec.lazy or self.settings.lazy_start
        await deployment.scale(0 if lazy and current is None else replicas)
        self.changed()
        return True

    async def remove(self, name: str) -> bool:
        """Stop and forget a function. Returns whether it existed."""
        async with self._lock:
            deployment = self.deployments.pop(name, None)
        if deployment is None:
            return False
        await deployment.stop()
        self.changed()
        return True

    async def stop(self) -> None:
        """Stop the watcher and every function process (in parallel)."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await asyncio.gather(*(d.stop() for d in self.deployments.values()))
        self.deployments.clear()
        if self.health_session is not None:
            await self.health_session.close()
