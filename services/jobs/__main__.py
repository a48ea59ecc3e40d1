"""`python -m jobs`: consumes aig.tasks.v1 (group `jobs`), runs every media task to its end.

HTTP on `AIG_JOBS_PORT` (9466): `/healthz`, `/readyz`, `/metrics`, and
`POST /callbacks/{provider}/{task_id}`, where providers POST their own completion callbacks
when `AIG_PROVIDER_CALLBACK_URL` (the public address of that path) is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import uvicorn
import uvloop
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aig_common import logs, tracing
from aig_common.consumers import (
    database_and_kafka_readiness,
    start_when_reachable,
    until_signalled,
)
from aig_common.contracts import TASKS_TOPIC
from aig_common.events import EventPublisher
from aig_common.ops import ops_routes, service_config
from aig_common.runtime import TimedCollections, freeze_startup_heap
from catalog.media import load_media_catalog
from controldb import create_engine_from_url, migrate
from controldb.tasks import TaskStore

from .adapters import build_providers
from .links import ResultLinks
from .providers.base import ProviderError
from .runner import Lease, Polling, TaskRunner
from .settings import JobsSettings

log = logging.getLogger("jobs")
CONSUMER_GROUP = "jobs"
MAX_CALLBACK_BYTES = 1024 * 1024


async def serve(settings: JobsSettings) -> None:
    await migrate(settings.database_url)
    engine = create_engine_from_url(settings.database_url)
    catalog = load_media_catalog()
    providers = build_providers(catalog.providers.values())
    publisher = EventPublisher(
        settings.kafka_bootstrap_servers, Path(settings.spool_dir), client_id="aig-jobs"
    )
    await publisher.start()
    runner = TaskRunner(
        TaskStore(async_sessionmaker(engine, expire_on_commit=False)),
        catalog,
        providers,
        ResultLinks.from_env(os.environ),
        publisher,
        Polling(settings.poll_initial_s, settings.poll_max_s, settings.submission_grace_s),
        callback_base=settings.provider_callback_base,
        lease=Lease(settings.instance_id, settings.lease_s),
    )
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id="aig-jobs",
        log_level=logging.DEBUG,
        # FastStream's own logger has its own (coloured) handler; this one goes to the
        # root handler, so its lines have the service's format (AIG_LOG_FORMAT).
        logger=logging.getLogger("jobs.kafka"),
        # At SIGTERM the batch in hand is finished and its offsets committed (at most
        # AIG_DRAIN_S) before the consumer leaves the group.
        graceful_timeout=settings.drain_s,
    )

    @broker.subscriber(
        TASKS_TOPIC,
        group_id=CONSUMER_GROUP,
        auto_offset_reset="earliest",
        # The event only starts a follower; the task itself is in the control DB, where a
        # restarted service finds it again (`resume`), so the offset may move on at once.
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def on_task(payload: bytes, message: KafkaMessage) -> None:
        await runner.on_requested(payload, message.headers)

    draining = asyncio.Event()
    readiness = database_and_kafka_readiness(engine, broker, draining)

    async def provider_callback(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_CALLBACK_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            accepted = await runner.on_provider_callback(
                request.path_params["provider"],
                request.path_params["task_id"],
                {name.lower(): value for name, value in request.headers.items()},
                body,
            )
        except ProviderError as error:
            log.warning("refused a provider callback: %s", error)
            return JSONResponse({"error": "verification failed"}, status_code=401)
        return JSONResponse({"accepted": accepted}, status_code=200 if accepted else 404)

    app = Starlette(
        routes=[
            *ops_routes(readiness),
            Route("/callbacks/{provider}/{task_id}", provider_callback, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(service_config(app, settings.host, settings.port))
    resumed = await runner.resume()
    log.info("resumed %d tasks in flight as %s", resumed, settings.instance_id)
    leases = asyncio.create_task(runner.keep_leases())
    await start_when_reachable(broker)
    http = asyncio.create_task(server.serve())
    freeze_startup_heap()
    TimedCollections().start()
    log.info("jobs consuming %s as group %s", TASKS_TOPIC, CONSUMER_GROUP)

    await until_signalled()
    draining.set()
    log.info("draining: finishing submissions in flight, up to %.0f s", settings.drain_s)
    await broker.stop()
    leases.cancel()
    await runner.stop(settings.drain_s)
    await publisher.stop()
    for provider in providers.values():
        with contextlib.suppress(Exception):
            await provider.aclose()
    server.should_exit = True
    await http
    await engine.dispose()


def main() -> None:
    logs.configure("jobs", relay_native_stderr=True)
    tracing.setup_from_env("jobs")
    uvloop.run(serve(JobsSettings.from_env()))


if __name__ == "__main__":
    main()
