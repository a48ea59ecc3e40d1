"""What every Kafka-consuming service (billing, jobs, webhooks) does the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from faststream.kafka import KafkaBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aig_common.ops import ReadinessCheck

log = logging.getLogger("aig.consumers")


async def start_when_reachable(broker: KafkaBroker) -> None:
    """Waits for Kafka instead of failing: a consumer catches up from the log when it is back."""
    delay = 1.0
    while True:
        try:
            await broker.start()
            return
        except Exception as exc:
            log.warning("Kafka not reachable yet (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)


async def until_signalled() -> None:
    """Returns at SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def database_and_kafka_readiness(
    engine: AsyncEngine, broker: KafkaBroker, draining: asyncio.Event | None = None
) -> ReadinessCheck:
    """/readyz of a consumer: the control DB answers, the broker is reachable, and the
    service is not draining after a SIGTERM (`draining` set)."""

    async def readiness() -> dict[str, bool]:
        if draining is not None and draining.is_set():
            return {"accepting": False}
        checks = {"database": False, "kafka": False}
        with contextlib.suppress(Exception):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = True
        with contextlib.suppress(Exception):
            checks["kafka"] = bool(await broker.ping(timeout=2))
        return checks

    return readiness
