"""Assembles the edge: FastAPI app, control DB, router channel, routes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

import grpc
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.routing import Route
from starlette.types import ASGIApp

from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common import tracing
from aig_common.contracts import GRPC_CLIENT_OPTIONS
from aig_common.events import EventPublisher
from aig_common.ops import ops_routes
from aig_common.runtime import TimedCollections
from catalog.live import LiveCatalog, poll_interval_from_env
from catalog.media import load_media_catalog
from controldb import KeyStore, create_engine_from_url, migrate
from controldb.limits import Limits
from controldb.money import Money
from controldb.responses import ResponseStore
from controldb.tasks import TaskStore
from controldb.webhooks import WebhookStore
from jobs.links import ResultLinks
from router.settings import RouterSettings

from .admin import admin_router
from .admission import Admissions
from .anthropic_ingress.routes import MessagesRoutes
from .billing_client import BillingClient
from .call_socket import CallSockets
from .dashboard import DashboardSettings, dashboard_routes
from .direct_routes import DirectRoutes
from .http import (
    RequestIdMiddleware,
    RequestLimits,
    RequestLimitsMiddleware,
    TracingMiddleware,
    install_error_handlers,
)
from .in_process_router import InProcessRouter
from .jobs import JobRoutes, callback_state_from
from .metrics import MetricsMiddleware
from .money_api import customer_router, money_admin_router
from .openapi import install_openapi
from .reservation_pool import ReservationPool
from .responses_ingress.routes import ResponsesRoutes
from .router_calls import RouterLink
from .router_streams import CallChannel, GrpcCallChannel, RouterStreams
from .settings import EdgeSettings
from .throttle import FailedAuthThrottle
from .v1 import OpenAIRoutes
from .webhooks_api import webhooks_admin_router, webhooks_customer_router


class EdgeApp(FastAPI):
    """FastAPI with the calls' direct routes (edge/direct_routes.py) in front of its
    middleware stack, when `direct_routes` lists any."""

    direct_routes: list[Route] = []
    request_limits: RequestLimits | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.direct_routes or self.request_limits is None:
            return stack
        return DirectRoutes(self, stack, self.direct_routes, self.request_limits)


def create_app(settings: EdgeSettings) -> FastAPI:
    engine = create_engine_from_url(settings.database_url)
    store = KeyStore(
        engine,
        settings.key_pepper,
        cache_ttl=settings.auth_cache_ttl_s,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    money = Money(sessions, reservation_ttl=timedelta(seconds=settings.reservation_ttl_s))
    # The router validates provider rows too; the edge needs only models, chains and prices.
    catalog = LiveCatalog(lambda loaded: loaded)
    pool = ReservationPool(money) if settings.reserve_ahead else None
    admissions = Admissions(catalog, money, settings.min_clamped_output_tokens, pool=pool)
    media = load_media_catalog()
    routes = OpenAIRoutes(store, admissions, settings.max_body_bytes, media)
    messages = MessagesRoutes(store, admissions, settings.max_body_bytes)
    responses = ResponsesRoutes(
        store, admissions, catalog, ResponseStore(sessions), settings.max_body_bytes
    )
    # One spool per edge process: replicas on one machine must not share a spool file.
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers,
        Path(settings.spool_dir),
        client_id=f"aig-edge-{settings.port}",
    )
    webhooks = WebhookStore(sessions)
    tasks = TaskStore(sessions)
    jobs = JobRoutes(
        store,
        admissions,
        media,
        tasks,
        publisher,
        ResultLinks.from_env(os.environ),
        settings.max_body_bytes,
        callback_state=callback_state_from(webhooks),
    )
    channels: list[grpc.aio.Channel] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        in_process = None
        router_address = settings.router_address
        if settings.in_process_router:
            in_process = await InProcessRouter.start(
                RouterSettings.from_env(), client_id=f"aig-router-in-edge-{settings.port}"
            )
            router_address = in_process.grpc_address
        # A gRPC channel belongs to the event loop it is made on: make it on the server's.
        channel = grpc.aio.insecure_channel(router_address, options=GRPC_CLIENT_OPTIONS)
        channels.append(channel)
        router = pb_grpc.RouterStub(channel)
        streams = None
        if settings.router_call_streams > 0:
            open_channel: Callable[[], CallChannel]
            if in_process is not None:
                open_channel = in_process.calls.open_channel
            elif settings.router_calls_address:
                open_channel = CallSockets(settings.router_calls_address).open
            else:
                open_channel = partial(GrpcCallChannel, router)
            streams = RouterStreams(open_channel, width=settings.router_call_streams)
        link = RouterLink(router, streams, in_process.servicer if in_process else None)
        for ingress in (routes, messages, responses):
            ingress.connect(link)
        watcher = asyncio.create_task(catalog.watch(poll_interval_from_env()))
        await publisher.start()
        timed_collections = TimedCollections()  # on the server's loop, which runs only now
        timed_collections.start()
        yield
        timed_collections.stop()
        watcher.cancel()
        await publisher.stop()
        if streams is not None:
            streams.close()
        await channel.close(grace=None)
        if in_process is not None:
            # uvicorn has drained the requests: what is left of the router's calls is
            # metered as abandoned, and its usage events flushed.
            await in_process.stop(settings.drain_s)
        await billing.aclose()
        if pool is not None:
            await pool.aclose()  # gives back what was held ahead, before money closes
        await money.aclose()
        await engine.dispose()

    app = EdgeApp(
        title="aig",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        # FastAPI's own telemetry off: it would look up three global providers on every
        # request (~1.5% of the edge's CPU), and may record request bodies. The edge's span
        # comes from TracingMiddleware, only when tracing is on.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.state.auth_throttle = FailedAuthThrottle(
        burst=settings.auth_failure_burst, per_minute=settings.auth_failures_per_minute
    )
    # Inside the error handling, so its 408 is an ordinary OpenAI-shaped APIError response.
    request_limits = RequestLimits(
        max_header_bytes=settings.max_header_bytes, body_timeout_s=settings.body_timeout_s
    )
    app.add_middleware(RequestLimitsMiddleware, limits=request_limits)
    app.add_middleware(MetricsMiddleware)
    if tracing.enabled():
        # Inside RequestIdMiddleware, so the span carries the response's x-request-id.
        app.add_middleware(TracingMiddleware)
    app.add_middleware(RequestIdMiddleware)
    call_routes = [*routes.routes(), *messages.routes(), *responses.routes(), *jobs.routes()]
    app.router.routes.extend(call_routes)
    if not tracing.enabled():
        # The calls skip the stack above and do its work themselves (edge/direct_routes.py).
        app.direct_routes = call_routes
        app.request_limits = request_limits
    limits = Limits(sessions)
    billing = BillingClient(settings.billing_url, settings.service_token)
    app.include_router(admin_router(store, settings.admin_token, money, limits), prefix="/admin/v1")
    app.include_router(
        money_admin_router(settings.admin_token, money, limits, billing), prefix="/admin/v1"
    )
    app.include_router(
        customer_router(
            store, money, limits, billing, timedelta(seconds=settings.tier_recompute_interval_s)
        )
    )

    app.include_router(webhooks_admin_router(settings.admin_token, webhooks), prefix="/admin/v1")
    app.include_router(webhooks_customer_router(store, webhooks, tasks))

    app.router.routes.extend(
        dashboard_routes(
            DashboardSettings.from_env(settings.key_pepper, settings.host, settings.port),
            sessions,
            store,
            money,
            limits,
            billing,
            timedelta(seconds=settings.tier_recompute_interval_s),
        )
    )

    async def readiness() -> dict[str, bool]:
        checks = {"database": False, "router": False}
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            pass
        if channels:
            state = channels[0].get_state(try_to_connect=True)
            checks["router"] = state in (
                grpc.ChannelConnectivity.READY,
                grpc.ChannelConnectivity.IDLE,
            )
        return checks

    app.router.routes.extend(ops_routes(readiness))
    install_openapi(app)
    return app
