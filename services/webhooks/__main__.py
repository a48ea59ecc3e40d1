"""`python -m webhooks`: consumes aig.task-events.v1 and delivers each terminal event of a
task with a callback URL, signed, until the receiver takes it."""

from __future__ import annotations

import asyncio
import logging
import time

import uvloop
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from sqlalchemy.ext.asyncio import async_sessionmaker

from aig_common import logs, tracing
from aig_common.consumers import (
    database_and_kafka_readiness,
    start_when_reachable,
    until_signalled,
)
from aig_common.contracts import TASK_EVENTS_TOPIC
from aig_common.ops import ops_server
from aig_common.runtime import TimedCollections, freeze_startup_heap
from controldb import create_engine_from_url, migrate
from controldb.webhooks import WebhookStore

from .deliver import Deliverer
from .intake import store_deliveries, trace_intake
from .settings import WebhooksSettings

log = logging.getLogger("webhooks")
CONSUMER_GROUP = "webhooks"


async def serve(settings: WebhooksSettings) -> None:
    await migrate(settings.database_url)
    engine = create_engine_from_url(settings.database_url)
    store = WebhookStore(async_sessionmaker(engine, expire_on_commit=False))
    deliverer = Deliverer(store, settings)

    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id="aig-webhooks",
        log_level=logging.DEBUG,
        # FastStream's own logger has its own (coloured) handler; this one goes to the
        # root handler, so its lines have the service's format (AIG_LOG_FORMAT).
        logger=logging.getLogger("webhooks.kafka"),
        # At SIGTERM the batch in hand is finished and its offsets committed (at most
        # AIG_DRAIN_S) before the consumer leaves the group.
        graceful_timeout=settings.drain_s,
    )

    @broker.subscriber(
        TASK_EVENTS_TOPIC,
        group_id=CONSUMER_GROUP,
        batch=True,
        max_records=500,
        batch_timeout_ms=100,
        auto_offset_reset="earliest",
        # Offsets are committed only after the handler returned, i.e. after the delivery
        # rows are committed; a failure seeks back so the batch comes again.
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def on_task_events(payloads: list[bytes], message: KafkaMessage) -> None:
        started_ns = time.time_ns()
        if await store_deliveries(store, payloads):
            deliverer.wake()
        if tracing.enabled():
            trace_intake(payloads, message.batch_headers, started_ns)

    # Deliveries already stored go out even while Kafka is unreachable.
    draining = asyncio.Event()
    readiness = database_and_kafka_readiness(engine, broker, draining)
    server = ops_server(settings.host, settings.port, readiness)
    http = asyncio.create_task(server.serve())
    delivering = asyncio.create_task(deliverer.run())
    await start_when_reachable(broker)
    freeze_startup_heap()
    TimedCollections().start()
    log.info("webhooks consuming %s as group %s", TASK_EVENTS_TOPIC, CONSUMER_GROUP)

    await until_signalled()
    draining.set()
    log.info("draining: finishing deliveries in flight, up to %.0f s", settings.drain_s)
    await broker.stop()
    # Attempts in flight finish and are recorded: cut off, one would be sent again when its
    # lease ran out, a second delivery the receiver may not deduplicate.
    deliverer.stop()
    await delivering
    server.should_exit = True
    await http
    await engine.dispose()


def main() -> None:
    logs.configure("webhooks", relay_native_stderr=True)
    tracing.setup_from_env("webhooks")
    uvloop.run(serve(WebhooksSettings.from_env()))


if __name__ == "__main__":
    main()
