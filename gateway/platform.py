"""The running platform in one process: NATS, provider, queue worker, connector, routes.

``mxt up`` runs one :class:`Platform` under uvicorn; the gateway app
(``gateway.app``) starts and stops it in its lifespan. The order matters on the way
down: stop taking calls, drain the worker, stop the connector, then the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from gateway import infrastructure
from gateway.auth import Authenticator, read_platform_token
from gateway.calls import CallStore
from gateway.connector import TopicConnector
from gateway.functions import FunctionSpec
from gateway.natsconn import connect
from gateway.provider import LocalProvider
from gateway.proxy import Forwarder
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from gateway.stack import load_stack
from gateway.worker import QueueWorker

log = logging.getLogger("mxt.gateway")


def load_stack_specs(path: Path) -> Iterable[FunctionSpec]:
    """The functions of a ``stack.yml`` as provider specs (validated by ``gateway.stack``)."""
    stack = load_stack(path)
    return [
        FunctionSpec(
            name=fn.name,
            handler=fn.handler_dir,
            image=fn.image or "",
            env=dict(fn.env),
            labels=dict(fn.labels),
            annotations=dict(fn.annotations),
            source="stack",
            workdir=stack.directory,
        )
        for fn in stack.functions.values()
    ]


async def connect_nats(url: str, secrets_dir: Path | None = None) -> NatsClient:
    """A NATS connection with the bus credentials that reconnects forever, every 0.5 s.

    ``gateway.natsconn.connect`` with its defaults; the password is ``nats-password``
    in ``secrets_dir`` (the environment's secrets directory when omitted).
    """
    return await connect(url, secrets_dir=secrets_dir)


#: Seconds a ``/healthz`` report is reused (the tests and the provider poll it).
HEALTH_CACHE_SECONDS = 1.0
#: Seconds one dependency's check may take before it counts as down.
HEALTH_CHECK_TIMEOUT = 2.0
#: Seconds clients are told to wait (``Retry-After``) while the bus is down.
BUS_RETRY_AFTER = 2


class Health:
    """What ``GET /healthz`` reports: each dependency the gateway needs, checked cheaply.

    - ``nats``: the gateway's connection is up and JetStream answers (account info);
    - ``database``: the storage settings' database answers a trivial query (SQLite:
      the file opened read-only; not created yet is fine, it is made on first use);
    - ``objects``: the object store is reachable (local: its directory is writable;
      S3: a HEAD request);
    - ``functions``: how many eagerly started functions have a ready replica, how many
      start lazily (on their first call). Informational: replicas are supervised by the
      provider, and a function still starting does not make the gateway unhealthy.

    A report is reused for :data:`HEALTH_CACHE_SECONDS`; concurrent requests share one
    check. Each check is bounded by :data:`HEALTH_CHECK_TIMEOUT`, and a check of the
    database or the object store still running from before is not started again.
    """

    CRITICAL = ("nats", "database", "objects")

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._report: dict[str, Any] | None = None
        self._at = 0.0
        self._pending: asyncio.Task[dict[str, Any]] | None = None
        self._threads: dict[str, asyncio.Future[Any]] = {}
        self._storage: Any = None
        self._engine: Any = None
        self._store: Any = None

    async def report(self) -> dict[str, Any]:
        """``{"status": "ok"|"down", "checks": {name: {"status": ..., ...}}}``."""
        if self._report is not None and time.monotonic() - self._at < HEALTH_CACHE_SECONDS:
            return self._report
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._check(), name="healthz")
        return await asyncio.shield(self._pending)

    async def _check(self) -> dict[str, Any]:
        nats, database, objects = await asyncio.gather(
            self._nats(), self._in_thread("database", self._database),
            self._in_thread("objects", self._objects),
        )  # fmt: skip
        checks = {
            "nats": nats,
            "database": database,
            "objects": objects,
            "functions": self._functions(),
        }
        down = [name for name in self.CRITICAL if checks[name]["status"] != "ok"]
        report = {"status": "down" if down else "ok", "down": down, "checks": checks}
        self._report, self._at = report, time.monotonic()
        return report

    async def _nats(self) -> dict[str, Any]:
        nc, js = self.platform.nc, self.platform.js
        if nc is None or js is None:
            return {"status": "down", "reason": "not connected yet"}
        if not nc.is_connected:
            state = "reconnecting" if nc.is_reconnecting else "disconnected"
            return {"status": "down", "reason": f"connection {state}"}
        try:
            await asyncio.wait_for(js.account_info(), HEALTH_CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return {"status": "down", "reason": f"JetStream does not answer: {_short(exc)}"}
        return {"status": "ok"}

    async def _in_thread(self, name: str, check: Any) -> dict[str, Any]:
        """Run a blocking check in a thread, at most one at a time, bounded in time."""
        running = self._threads.get(name)
        if running is not None and not running.done():
            return {"status": "down", "reason": "the previous check has not returned"}
        future = asyncio.ensure_future(asyncio.to_thread(check))
        self._threads[name] = future
        try:
            return await asyncio.wait_for(asyncio.shield(future), HEALTH_CHECK_TIMEOUT)
        except TimeoutError:
            return {"status": "down", "reason": f"no answer within {HEALTH_CHECK_TIMEOUT:g} s"}
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return {"status": "down", "reason": _short(exc)}

    def _settings(self) -> Any:
        if self._storage is None:
            from storage.settings import StorageSettings

            self._storage = StorageSettings()
        return self._storage

    def _database(self) -> dict[str, Any]:
        import sqlalchemy as sa

        url = sa.engine.make_url(self._settings().resolved_database_url)
        if url.get_backend_name() == "sqlite":
            return _sqlite_check(url.database)
        if self._engine is None:
            from storage.db.engine import make_engine

            self._engine = make_engine(url.render_as_string(hide_password=False))
        with self._engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return {"status": "ok", "backend": url.get_backend_name()}

    def _objects(self) -> dict[str, Any]:
        settings = self._settings()
        if settings.object_store == "local":
            return _directory_check(settings.data_dir / "objects")
        if self._store is None:
            from storage.objects import make_store

            self._store = make_store("s3")
        from storage.keys import BUCKETS

        self._store.exists(BUCKETS[0], "healthz-probe")  # Transient when unreachable
        return {"status": "ok", "backend": "s3"}

    def _functions(self) -> dict[str, Any]:
        deployments = self.platform.provider.deployments.values()
        eager = [d for d in deployments if d.replicas]
        waiting = sorted(d.spec.name for d in eager if not d.ready)
        return {
            "status": "starting" if waiting else "ok",
            "eager": len(eager),
            "ready": len(eager) - len(waiting),
            "lazy": sum(1 for d in deployments if not d.replicas),
            "waiting": waiting,
        }


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _sqlite_check(database: str | None) -> dict[str, Any]:
    if not database or database == ":memory:":
        return {"status": "ok", "backend": "sqlite"}
    path = Path(database)
    if not path.exists():
        # made (and migrated) by the first function that uses it
        return {"status": "ok", "backend": "sqlite", "note": "not created yet"}
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=HEALTH_CHECK_TIMEOUT)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()
    return {"status": "ok", "backend": "sqlite"}


def _directory_check(root: Path) -> dict[str, Any]:
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return {
            "status": "down",
            "backend": "local",
            "reason": f"{existing} is not a writable directory",
        }
    return {"status": "ok", "backend": "local"}


class Platform:
    """Everything behind the gateway's port, started and stopped together.

    Parameters
    ----------
    run_connector
        Whether this process consumes the topics. Whether it runs a queue worker
        is the setting ``MXT_RUN_WORKER`` (``mxt worker`` processes can do it instead).
    """

    def __init__(self, settings: GatewaySettings, run_connector: bool = True) -> None:
        self.settings = settings
        # both refuse to start without their secrets (SecretError): no open door
        self.auth = Authenticator(settings.secrets_path)
        self.platform_token = read_platform_token(settings.secrets_path)
        self.provider = LocalProvider(settings, load_stack_specs)
        self.forwarder = Forwarder(
            settings.upstream_timeout, settings.start_timeout, self.platform_token
        )
        self.routes = RouteTable()
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.calls: CallStore | None = None
        self.worker: QueueWorker | None = None
        self.connector: TopicConnector | None = None
        self.run_connector = run_connector
        self.provider.listeners.append(self._functions_changed)
        self.health = Health(self)

    def bus_down(self) -> str | None:
        """Why state changes are refused now (the gateway's NATS connection is down), or
        ``None`` when the bus is up."""
        if self.nc is not None and self.nc.is_connected:
            return None
        return "the message bus (NATS) is down; state changes are refused until it is back"

    def _functions_changed(self) -> None:
        self.routes = RouteTable(d.spec for d in self.provider.deployments.values())
        if self.connector is not None:
            self.connector.request_sync()

    async def start(self) -> None:
        """Connect to NATS, declare the streams, start functions, worker and connector."""
        self.nc = await connect_nats(self.settings.nats_url, self.settings.secrets_path)
        self.js = self.nc.jetstream()
        self.calls = CallStore(await infrastructure.declare(self.js, self.settings))
        await self.forwarder.open()
        await self.provider.start()
        if self.settings.run_worker:
            self.worker = QueueWorker(
                self.settings, self.js, self.calls, self.platform_token, self.provider
            )
            await self.worker.start()
        if self.run_connector:
            self.connector = TopicConnector(
                self.js,
                self.calls,
                self.provider,
                self.settings.max_async_body_bytes,
                invoker=self.worker,
            )
            await self.connector.start()

    async def stop(self) -> None:
        """Drain the worker and connector, stop the functions, close NATS."""
        if self.connector is not None:
            await self.connector.stop()
        if self.worker is not None:
            await self.worker.stop()
        await self.provider.stop()
        await self.forwarder.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 5)
