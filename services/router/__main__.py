"""`python -m router`: the gRPC router service."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
import uvloop

from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common import logs, tracing
from aig_common.contracts import GRPC_OPTIONS
from aig_common.events import EventPublisher
from aig_common.ops import ops_server
from aig_common.runtime import TimedCollections, freeze_startup_heap
from catalog.live import LiveCatalog

from .breaker import Breakers
from .chat import ChatService
from .config import builder
from .embed import EmbeddingsService
from .metering import Meter
from .server import RouterServicer
from .settings import RouterSettings
from .upstream import UpstreamClients

log = logging.getLogger("router")

# How long usage events gather before one produce request takes them all. The router
# publishes one per call, and at moderate rates aiokafka's per-request work was a large part
# of its CPU: 100 ms instead of the publisher's 20 cut the router's CPU per call by 10-18 %
# at 200 calls/s (and the broker's by a quarter). Each event is in the fsynced journal
# before it waits, and billing's own fetch waits up to 500 ms, so only settlement lag grows,
# by at most this much.
USAGE_LINGER_S = 0.1


async def serve(settings: RouterSettings) -> None:
    # Validated in full (provider rows against their types too) before anything starts.
    config = LiveCatalog(builder(settings.env, settings.sandbox_url))
    clients = UpstreamClients(settings)
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers,
        Path(settings.spool_dir),
        client_id="aig-router",
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
    address = f"{settings.host}:{settings.port}"
    server.add_insecure_port(address)
    await server.start()
    call_socket = servicer.call_socket()
    if settings.calls_port:
        await call_socket.start(settings.host, settings.calls_port)
    freeze_startup_heap()
    TimedCollections().start()

    stop = asyncio.Event()

    async def readiness() -> dict[str, bool]:
        # Not ready once draining, so no new call is sent here while the rest finish.
        return {"grpc": True, "accepting": not stop.is_set()}

    ops = ops_server(settings.host, settings.metrics_port, readiness)
    ops_task = asyncio.create_task(ops.serve())
    watcher = asyncio.create_task(config.watch(settings.catalog_poll_s))
    sandboxed = config.current.providers.sandboxed()
    log.info(
        "router listening on %s (call socket on :%d, ops on :%d); sandboxed providers: %s",
        address,
        settings.calls_port,
        settings.metrics_port,
        ", ".join(sandboxed) or "none",
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: refusing new calls, up to %.0f s for those in flight", settings.drain_s)
    watcher.cancel()
    # New calls are refused at once; calls and streams in flight run to their end (at most
    # AIG_DRAIN_S), each publishing its usage event, which publisher.stop() then flushes.
    # Edges' long-lived call streams (gRPC and call socket) are told too: they move new calls
    # to another router and close the stream once their calls here have ended.
    stopping = asyncio.gather(
        server.stop(grace=settings.drain_s), call_socket.stop(grace_s=settings.drain_s)
    )
    servicer.drain()
    await stopping
    ops.should_exit = True
    await ops_task
    await publisher.stop()
    await clients.aclose()


def main() -> None:
    logs.configure("router", relay_native_stderr=True)
    tracing.setup_from_env("router")
    uvloop.run(serve(RouterSettings.from_env()))


if __name__ == "__main__":
    main()
