"""Turns terminal task events into stored deliveries: one per task, however often the
event arrives. The consumer commits its offsets only after this returned, so a crash before
the rows are durable means the events come again, and a crash after means they are stored."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from aig.events.v1 import events_pb2 as pb
from aig_common import tracing
from aig_common.contracts import TASK_EVENTS_TOPIC
from controldb.webhooks import NewDelivery, WebhookStore

from .payload import callback_body, is_deliverable

log = logging.getLogger("webhooks")


def deliveries_from(payloads: Sequence[bytes]) -> list[NewDelivery]:
    found: list[NewDelivery] = []
    for payload in payloads:
        try:
            event = pb.TaskEvent.FromString(payload)
        except DecodeError:
            # Redelivering it would never make it readable, and would stall its partition.
            log.error("skipping a task event that is not a TaskEvent (%d bytes)", len(payload))
            continue
        if is_deliverable(event):
            found.append(
                NewDelivery(
                    task_id=event.task_id,
                    event_id=event.event_id,
                    account_id=event.account_id,
                    callback_url=event.callback_url,
                    payload=callback_body(event),
                )
            )
    return found


async def store_deliveries(store: WebhookStore, payloads: Sequence[bytes]) -> int:
    return await store.add_deliveries(deliveries_from(payloads))


def trace_intake(
    payloads: Sequence[bytes], headers: Sequence[Mapping[str, str]], started_ns: int
) -> None:
    """One span per task event taken in, in the trace of the task (the createTask call's)."""
    for payload, received in zip(payloads, headers, strict=False):
        if "traceparent" not in received:
            continue
        try:
            event = pb.TaskEvent.FromString(payload)
        except DecodeError:
            continue
        attributes = {
            "aig.task_id": event.task_id,
            "aig.event_id": event.event_id,
            "aig.deliverable": is_deliverable(event),
        }
        tracing.record_consumed(
            "webhooks intake", TASK_EVENTS_TOPIC, received, started_ns, attributes
        )
