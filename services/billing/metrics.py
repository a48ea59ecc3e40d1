"""Billing's view of how far behind it is: consumer lag, ledger write lag, batch sizes, and
the reservations in flight across the whole gateway (one cheap query on a timer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controldb.admission import nano_usd_sum, utc_now
from controldb.models import Reservation
from controldb.money import Money

log = logging.getLogger("billing")

BATCH_SIZE = Histogram(
    "aig_billing_batch_size",
    "Usage events per consumed batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
CONSUMER_LAG = Gauge(
    "aig_billing_consumer_lag",
    "Records of the usage topic not yet consumed by this consumer, by partition "
    "(high watermark minus the next offset), as of the last batch",
    ["partition"],
)
LEDGER_WRITE_LAG = Histogram(
    "aig_billing_ledger_write_lag_seconds",
    "From a usage event's occurred_at to its ledger row and settlement being written",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
RESERVATIONS_IN_FLIGHT = Gauge(
    "aig_reservations_in_flight",
    "Spend reservations held in the control DB (calls admitted, not yet settled or expired)",
)
RESERVED_NANO_USD = Gauge(
    "aig_reservations_in_flight_nano_usd", "Nano-USD held by the reservations in flight"
)
# How often billing counts the reservations table (the rows of calls in flight: small).
RESERVATIONS_POLL_S = 2.0
# How often billing deletes reservations that expired unsettled.
EXPIRED_PURGE_EVERY_S = 60.0

_lag_children: dict[int, Any] = {}


def record_lag(consumer: Any, records: Iterable[Any]) -> None:
    """Lag per partition of the batch just handled, from aiokafka's own fetch metadata
    (`highwater`): no request to the broker."""
    newest: dict[Any, int] = {}
    for record in records:
        tp = (record.topic, record.partition)
        if record.offset >= newest.get(tp, -1):
            newest[tp] = record.offset
    for (topic, partition), offset in newest.items():
        high = consumer.highwater(TopicPartition(topic, partition))
        if high is None:
            continue
        child = _lag_children.get(partition)
        if child is None:
            child = _lag_children[partition] = CONSUMER_LAG.labels(str(partition))
        child.set(max(0, high - offset - 1))


async def count_reservations(engine: AsyncEngine, money: Money) -> None:
    """Every RESERVATIONS_POLL_S, counts the live reservations; every
    EXPIRED_PURGE_EVERY_S, deletes the expired ones (every billing replica does: the
    delete is idempotent and cheap on the indexed expiry)."""
    polls_per_purge = max(1, round(EXPIRED_PURGE_EVERY_S / RESERVATIONS_POLL_S))
    polls = 0
    while True:
        try:
            if polls % polls_per_purge == 0:
                purged = await money.purge_expired_reservations()
                if purged:
                    log.info("deleted %d expired reservations", purged)
            live = Reservation.expires_at > utc_now()
            # nano_usd_sum casts to BIGINT: PostgreSQL's sum() is NUMERIC (a Decimal).
            query = select(func.count(), nano_usd_sum(Reservation.amount_nano_usd)).where(live)
            async with engine.connect() as connection:
                count, held = (await connection.execute(query)).one()
            RESERVATIONS_IN_FLIGHT.set(count)
            RESERVED_NANO_USD.set(held)
        except Exception:
            log.warning("counting reservations failed", exc_info=True)
        polls += 1
        await asyncio.sleep(RESERVATIONS_POLL_S)
