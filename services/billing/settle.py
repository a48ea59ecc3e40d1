"""Turning usage events into ledger rows and settlements, exactly once in effect.

Order matters: the ledger rows are written first (ReplacingMergeTree collapses a repeated
event id), then the control DB settles (idempotent by event id), and only then does the
consumer commit its Kafka offsets. A crash anywhere in between means redelivery, and
redelivery changes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from prometheus_client import Counter

from aig.events.v1 import events_pb2 as events
from controldb.money import Money, UsageSettlement

from .ledger import Ledger, UsageRow

log = logging.getLogger("billing")

EVENTS_SETTLED = Counter("aig_billing_events_total", "Usage events processed", ["result"])
CRASH_EXIT_CODE = 17


def settlement_of(event: events.UsageEvent) -> UsageSettlement:
    billed = event.billed_cost_nano_usd if event.outcome == events.CALL_OUTCOME_SUCCEEDED else 0
    return UsageSettlement(
        event_id=event.event_id,
        account_id=event.account_id,
        key_id=event.key_id,
        workspace_id=event.workspace_id or None,
        reservation_id=event.reservation_id or None,
        billed_nano_usd=max(billed, 0),
        occurred_at=datetime.fromtimestamp(event.occurred_at_ms / 1000, UTC),
    )


class UsageSettler:
    def __init__(self, ledger: Ledger, money: Money, *, crash_after_write: bool = False) -> None:
        self._ledger = ledger
        self._money = money
        self._crash_after_write = crash_after_write

    async def handle(self, payloads: Sequence[bytes]) -> int:
        """Writes one batch durably; returns how many events were new to the control DB."""
        decoded: list[events.UsageEvent] = []
        for payload in payloads:
            try:
                decoded.append(events.UsageEvent.FromString(payload))
            except DecodeError:
                # A poison message must not block the partition; it is counted and logged.
                EVENTS_SETTLED.labels("undecodable").inc()
                log.error("skipping an undecodable usage event (%d bytes)", len(payload))
        usable = [event for event in decoded if event.event_id and event.account_id]
        if not usable:
            return 0
        await self._ledger.insert([UsageRow.from_event(event) for event in usable])
        fresh = await self._money.settle([settlement_of(event) for event in usable])
        EVENTS_SETTLED.labels("settled").inc(fresh)
        EVENTS_SETTLED.labels("duplicate").inc(len(usable) - fresh)
        if self._crash_after_write:
            log.warning("AIG_BILLING_CRASH_AFTER_WRITE: exiting before the offset commit")
            os._exit(CRASH_EXIT_CODE)
        return fresh
