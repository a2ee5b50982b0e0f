"""The running platform in one process: NATS, provider, queue worker, connector, routes.

``mxt up`` runs one :class:`Platform` under uvicorn; the gateway app
(``gateway.app``) starts and stops it in its lifespan. The order matters on the way
down: stop taking calls, drain the worker, stop the connector, then the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

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
