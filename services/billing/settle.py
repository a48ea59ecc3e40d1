"""Turning usage events into ledger rows and settlements, exactly once in effect.

Order matters: the ledger rows are written first (ReplacingMergeTree collapses a repeated
event id), then the control DB settles (idempotent by event id), and only then does the
consumer commit its Kafka offsets. A crash anywhere in between means redelivery, and
redelivery changes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from prometheus_client import Counter

from aig.events.v1 import events_pb2 as events
from aig_common import tracing
from aig_common.contracts import USAGE_TOPIC
from controldb.money import Money, UsageSettlement

from .ledger import Ledger, UsageRow
from .metrics import BATCH_SIZE, LEDGER_WRITE_LAG

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
    def __init__(
        self,
        ledger: Ledger,
        money: Money,
        *,
        crash_after_write: bool = False,
        crash_after_ledger_batch: int = 0,
    ) -> None:
        self._ledger = ledger
        self._money = money
        self._crash_after_write = crash_after_write
        self._crash_after_ledger_batch = crash_after_ledger_batch
        self._batches = 0

    async def handle(
        self, payloads: Sequence[bytes], headers: Sequence[Mapping[str, str]] = ()
    ) -> int:
        """Writes one batch durably; returns how many events were new to the control DB.
        `headers` are the records' Kafka headers, in order (only read for tracing)."""
        started_ns = time.time_ns()
        BATCH_SIZE.observe(len(payloads))
        decoded: list[events.UsageEvent] = []
        traced: list[tuple[events.UsageEvent, Mapping[str, str]]] = []
        for index, payload in enumerate(payloads):
            try:
                event = events.UsageEvent.FromString(payload)
            except DecodeError:
                # A poison message must not block the partition; it is counted and logged.
                EVENTS_SETTLED.labels("undecodable").inc()
                log.error("skipping an undecodable usage event (%d bytes)", len(payload))
                continue
            decoded.append(event)
            if index < len(headers) and "traceparent" in headers[index]:
                traced.append((event, headers[index]))
        usable = [event for event in decoded if event.event_id and event.account_id]
        if not usable:
            return 0
        await self._ledger.insert([UsageRow.from_event(event) for event in usable])
        self._batches += 1
        if self._batches == self._crash_after_ledger_batch:
            log.warning(
                "AIG_BILLING_CRASH_AFTER_LEDGER_BATCH: exiting after the ledger write of batch"
                " %d, before its settlement and offset commit",
                self._batches,
            )
            os._exit(CRASH_EXIT_CODE)
        fresh = await self._money.settle([settlement_of(event) for event in usable])
        EVENTS_SETTLED.labels("settled").inc(fresh)
        EVENTS_SETTLED.labels("duplicate").inc(len(usable) - fresh)
        written_ms = time.time_ns() // 1_000_000
        for event in usable:
            LEDGER_WRITE_LAG.observe(max(0, written_ms - event.occurred_at_ms) / 1000)
        _trace_settlements(traced, started_ns)
        if self._crash_after_write:
            log.warning("AIG_BILLING_CRASH_AFTER_WRITE: exiting before the offset commit")
            os._exit(CRASH_EXIT_CODE)
        return fresh


def _trace_settlements(
    traced: Sequence[tuple[events.UsageEvent, Mapping[str, str]]], started_ns: int
) -> None:
    """One span per settled event, in the trace of the call it bills: the batch's ledger
    write and settlement, which that event shared with the rest of its batch."""
    for event, headers in traced:
        tracing.record_consumed(
            "billing settle",
            USAGE_TOPIC,
            headers,
            started_ns,
            {
                "aig.event_id": event.event_id,
                "aig.request_id": event.request_id,
                "aig.account_id": event.account_id,
                "aig.billed_nano_usd": settlement_of(event).billed_nano_usd,
            },
        )
