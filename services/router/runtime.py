"""The router's parts, assembled and started: what `python -m router` serves, and what an
edge runs inside its own process when it is told to (edge/in_process_router.py).

Both build the router from the same `RouterSettings` in the same way, so a call is
planned, failed over, metered and traced alike whichever process the router runs in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc

from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common.contracts import GRPC_OPTIONS
from aig_common.events import EventPublisher
from catalog.live import LiveCatalog

from .breaker import Breakers
from .chat import ChatService
from .config import RouterConfig, builder
from .embed import EmbeddingsService
from .metering import Meter
from .server import RouterServicer
from .settings import RouterSettings
from .upstream import UpstreamClients

# How long usage events gather before one produce request takes them all. The router
# publishes one per call, and at moderate rates aiokafka's per-request work was a large part
# of its CPU: 100 ms instead of the publisher's 20 cut the router's CPU per call by 10-18 %
# at 200 calls/s (and the broker's by a quarter). Each event is in the fsynced journal
# before it waits, and billing's own fetch waits up to 500 ms, so only settlement lag grows,
# by at most this much.
USAGE_LINGER_S = 0.1


@dataclass
class RunningRouter:
    config: LiveCatalog[RouterConfig]
    clients: UpstreamClients
    publisher: EventPublisher
    servicer: RouterServicer
    server: grpc.aio.Server
    # The port gRPC listens on (the one asked for, or the one the kernel chose for port 0).
    port: int
    watcher: asyncio.Task[None]

    async def stop(self, drain_s: float, *also_stopping: Awaitable[object]) -> None:
        """Refuses new calls; those in flight (on gRPC, and on the call streams, which are
        told to take no more) run to their end, at most `drain_s`, each publishing its usage
        event, which is flushed before the upstream clients close. `also_stopping`: other
        listeners' drains (the call socket's) that run meanwhile."""
        self.watcher.cancel()
        stopping = asyncio.gather(self.server.stop(grace=drain_s), *also_stopping)
        self.servicer.drain()
        await stopping
        await self.publisher.stop()
        await self.clients.aclose()


async def start_router(
    settings: RouterSettings, *, address: str, client_id: str = "aig-router"
) -> RunningRouter:
    """Builds the router from `settings` and serves gRPC on `address` (`host:0` for a port
    the kernel chooses). `client_id` names the Kafka producer and its spool files, which
    no two processes may share in one spool directory."""
    # Validated in full (provider rows against their types too) before anything starts.
    config = LiveCatalog(builder(settings.env, settings.sandbox_url))
    clients = UpstreamClients(settings)
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers,
        Path(settings.spool_dir),
        client_id=client_id,
        linger_s=USAGE_LINGER_S,
    )
    await publisher.start()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    servicer = RouterServicer(
        config,
        ChatService(
            config,
            clients,
            Breakers(
                failure_threshold=settings.breaker_failures,
                cooldown_s=settings.breaker_cooldown_s,
            ),
        ),
        EmbeddingsService(config, clients),
        Meter(config, publisher),
    )
    pb_grpc.add_RouterServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    await server.start()
    watcher = asyncio.create_task(config.watch(settings.catalog_poll_s))
    return RunningRouter(config, clients, publisher, servicer, server, port, watcher)
