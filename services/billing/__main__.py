"""`python -m billing`: consumes aig.usage.v1, writes the ledger, settles balances, runs tiers."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, cast

import uvicorn
import uvloop
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.message import StreamMessage
from sqlalchemy.ext.asyncio import async_sessionmaker

from aig_common import logs, tracing
from aig_common.consumers import (
    database_and_kafka_readiness,
    start_when_reachable,
    until_signalled,
)
from aig_common.contracts import BILLING_CONSUMER_GROUP, USAGE_TOPIC
from aig_common.ops import service_config
from aig_common.runtime import TimedCollections, freeze_startup_heap
from controldb import create_engine_from_url, migrate
from controldb.money import Money

from .api import billing_app
from .ledger import ledger_from_env
from .metrics import count_reservations, record_lag
from .settings import BillingSettings
from .settle import UsageSettler
from .tiers import run_periodically

log = logging.getLogger("billing")
CONSUMER_GROUP = BILLING_CONSUMER_GROUP


async def record_values(batch: StreamMessage[Any]) -> list[bytes]:
    """A batch's payloads: the records' values, which FastStream's batch parser has already
    gathered as the message's body. Its own batch decoder builds a message for every record
    a second time and tries each value as JSON before keeping it as bytes (our events are
    protobuf: it always fails), which took 12 % of billing's CPU at 18,000 events a second."""
    return cast(list[bytes], batch.body)


async def serve(settings: BillingSettings) -> None:
    ledger = ledger_from_env(dict(os.environ), Path(settings.var_dir))
    await ledger.migrate()
    await migrate(settings.database_url)
    engine = create_engine_from_url(settings.database_url)
    money = Money(async_sessionmaker(engine, expire_on_commit=False))
    settler = UsageSettler(
        ledger,
        money,
        crash_after_write=settings.crash_after_write,
        crash_after_ledger_batch=settings.crash_after_ledger_batch,
    )

    # Per-message logs go out at DEBUG: at thousands of events a second INFO would cost more
    # than the work.
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id="aig-billing",
        log_level=logging.DEBUG,
        # FastStream's own logger has its own (coloured) handler; this one goes to the
        # root handler, so its lines have the service's format (AIG_LOG_FORMAT).
        logger=logging.getLogger("billing.kafka"),
        # At SIGTERM the batch in hand is finished and its offsets committed (at most
        # AIG_DRAIN_S) before the consumer leaves the group.
        graceful_timeout=settings.drain_s,
    )

    @broker.subscriber(
        USAGE_TOPIC,
        group_id=CONSUMER_GROUP,
        batch=True,
        max_records=settings.max_batch,
        batch_timeout_ms=100,
        auto_offset_reset="earliest",
        # Offsets are committed only after the handler returned, i.e. after both writes;
        # a failure seeks back so the batch is delivered again.
        ack_policy=AckPolicy.NACK_ON_ERROR,
        # The broker holds a fetch until 64 KiB of events (a few hundred) or
        # AIG_BILLING_BATCH_WAIT_MS have gathered: one settlement transaction and one ledger
        # insert per few hundred calls instead of per one or two, for that much more lag.
        fetch_min_bytes=64 * 1024,
        fetch_max_wait_ms=settings.batch_wait_ms,
        decoder=record_values,
    )
    async def on_usage(payloads: list[bytes], message: KafkaMessage) -> None:
        # Each record's headers (its W3C trace context), in the payloads' order.
        await settler.handle(payloads, message.batch_headers if tracing.enabled() else ())
        raw = message.raw_message
        record_lag(message.consumer, raw if isinstance(raw, tuple) else (raw,))

    draining = asyncio.Event()
    readiness = database_and_kafka_readiness(engine, broker, draining)

    await start_when_reachable(broker)
    server = uvicorn.Server(
        service_config(
            billing_app(ledger, money, readiness, settings.service_token),
            settings.host,
            settings.port,
        )
    )
    http = asyncio.create_task(server.serve())
    freeze_startup_heap()
    TimedCollections().start()
    tiers = asyncio.create_task(run_periodically(ledger, money, settings.tier_recompute_interval_s))
    reservations = asyncio.create_task(count_reservations(engine, money))
    log.info("billing consuming %s as group %s", USAGE_TOPIC, CONSUMER_GROUP)

    await until_signalled()
    draining.set()
    log.info("draining: finishing the batch in hand, up to %.0f s", settings.drain_s)
    tiers.cancel()
    reservations.cancel()
    await broker.stop()
    server.should_exit = True
    await http
    await ledger.close()
    await money.aclose()
    await engine.dispose()


def main() -> None:
    logs.configure("billing", relay_native_stderr=True)
    tracing.setup_from_env("billing")
    uvloop.run(serve(BillingSettings.from_env()))


if __name__ == "__main__":
    main()
