"""The operations endpoints every service serves: /healthz, /readyz and /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def ops_routes(readiness: ReadinessCheck) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a service that handles SIGTERM itself. A plain one takes the
    signal for its own and stops at once, so /readyz would vanish instead of answering 503
    while the service drains; this one stops when the service sets `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def service_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    """How every service but the edge serves HTTP: the service logs for itself, runs no
    lifespan, and does not name its server software in a `server` header (jobs' provider
    callbacks are reachable from outside; the rest has no reason to advertise it either)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,
        lifespan="off",
        server_header=False,
    )


def ops_server(host: str, port: int, readiness: ReadinessCheck) -> uvicorn.Server:
    """A small HTTP server for services whose main protocol is not HTTP."""
    return EmbeddedServer(service_config(Starlette(routes=ops_routes(readiness)), host, port))
