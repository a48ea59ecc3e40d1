"""`python -m router`: the gRPC router service."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from aig_common import logs, tracing
from aig_common.ops import ops_server
from aig_common.runtime import TimedCollections, freeze_startup_heap

from .runtime import start_router
from .settings import RouterSettings

log = logging.getLogger("router")


async def serve(settings: RouterSettings) -> None:
    address = f"{settings.host}:{settings.port}"
    router = await start_router(settings, address=address)
    call_socket = router.servicer.call_socket()
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
    sandboxed = router.config.current.providers.sandboxed()
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
    # Edges' long-lived call streams (gRPC and call socket) are told too: they move new calls
    # to another router and close the stream once their calls here have ended.
    await router.stop(settings.drain_s, call_socket.stop(grace_s=settings.drain_s))
    ops.should_exit = True
    await ops_task


def main() -> None:
    logs.configure("router", relay_native_stderr=True)
    tracing.setup_from_env("router")
    uvloop.run(serve(RouterSettings.from_env()))


if __name__ == "__main__":
    main()
