"""What an attempt's answer means for its delivery: a pure function, so every rule is
testable without a network or a clock."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from controldb.webhooks import DEAD, DELIVERED, DISABLED, RETRY


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # delivered | disabled | retry | dead
    next_attempt_at: datetime | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `retry-after` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


def decide(
    status: int | None,
    *,
    retry_after_s: float | None,
    schedule_index: int,
    schedule: Sequence[float],
    jitter: float,
    max_retry_after_s: float,
    now: datetime,
    rng: random.Random,
) -> Decision:
    """2xx ends the delivery; 410 Gone disables it (and its URL, for the account); any other
    status, or none (timeout, refused connection), is retried after the schedule's next
    delay with jitter — or after `retry-after` if the receiver asked for longer — until the
    schedule runs out, then the delivery is dead."""
    if status is not None and 200 <= status < 300:
        return Decision(DELIVERED)
    if status == 410:
        return Decision(DISABLED)
    if schedule_index >= len(schedule):
        return Decision(DEAD)
    delay = schedule[schedule_index] * rng.uniform(1 - jitter, 1 + jitter)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_retry_after_s))
    return Decision(RETRY, now + timedelta(seconds=delay))
