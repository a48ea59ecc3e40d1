"""Per-key request-rate limits (`rpm_limit`): the window arithmetic, pure.

A key's requests are counted per fixed UTC minute; the rate is the sliding approximation
over the current and the previous minute: previous * (the part of the previous minute still
inside a 60-second window ending now) + current. A call is admitted when that weighted
count plus itself stays within the limit. The counts live on the key's own row (`rpm_minute`,
`rpm_current`, `rpm_previous`), read by admission's one query and written by one UPDATE in
the same transaction, under the account's lock, so the limit holds across every edge
replica. All arithmetic is in integer milliseconds: `used` below is the weighted count
scaled by WINDOW_MS, so nothing is rounded until a header is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WINDOW_MS = 60_000
# The most an operator may set: a key past 1,000,000 requests a minute is unlimited in effect.
MAX_RPM_LIMIT = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class RateStatus:
    """What an admitted call's `x-ratelimit-*` headers say."""

    limit: int
    remaining: int
    reset_ms: int  # until the window is back to `limit` requests free


@dataclass(frozen=True, slots=True)
class RateLimited(Exception):
    """A key over its rpm_limit; becomes HTTP 429. Nothing was counted or reserved."""

    limit: int
    retry_after_ms: int  # until one more call would be admitted
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Window:
    """The counts to store on the key's row after an admitted call."""

    minute: int
    current: int
    previous: int


def minute_of(now: datetime) -> tuple[int, int]:
    """(UTC minutes since the epoch, milliseconds into that minute)."""
    epoch_ms = (now - _EPOCH) // _MILLISECOND
    minute, elapsed = divmod(epoch_ms, WINDOW_MS)
    return minute, elapsed


def take(
    limit: int,
    stored_minute: int | None,
    stored_current: int,
    stored_previous: int,
    now: datetime,
) -> tuple[RateStatus, Window]:
    """Admits one call against the stored counts, or raises RateLimited."""
    minute, elapsed = minute_of(now)
    if stored_minute is not None and stored_minute > minute:
        # Another edge's clock is ahead: count in its minute rather than go back in time.
        minute, elapsed = stored_minute, 0
    if stored_minute == minute:
        current, previous = stored_current, stored_previous
    elif stored_minute == minute - 1:
        current, previous = 0, stored_current
    else:
        current, previous = 0, 0
    used = previous * (WINDOW_MS - elapsed) + current * WINDOW_MS
    if used + WINDOW_MS > limit * WINDOW_MS:
        raise RateLimited(
            limit=limit,
            retry_after_ms=_wait_ms(limit, current, previous, elapsed),
            reset_ms=_reset_ms(current, previous, elapsed),
        )
    current += 1
    used += WINDOW_MS
    status = RateStatus(
        limit=limit,
        remaining=(limit * WINDOW_MS - used) // WINDOW_MS,
        reset_ms=_reset_ms(current, previous, elapsed),
    )
    return status, Window(minute=minute, current=current, previous=previous)


def _wait_ms(limit: int, current: int, previous: int, elapsed: int) -> int:
    """The shortest wait after which one more call fits."""
    left_in_minute = WINDOW_MS - elapsed
    if current + 1 <= limit and previous > 0:
        # Later in this minute, as the previous minute's weight shrinks:
        # previous * (left_in_minute - t) ≤ (limit - current - 1) * WINDOW_MS.
        room = (limit - current - 1) * WINDOW_MS
        return max(0, left_in_minute - room // previous)
    if current == 0:
        return left_in_minute
    # In the next minute, where this minute's count becomes the previous one:
    # current * (WINDOW_MS - e) ≤ (limit - 1) * WINDOW_MS.
    return left_in_minute + max(0, WINDOW_MS - (limit - 1) * WINDOW_MS // current)


def _reset_ms(current: int, previous: int, elapsed: int) -> int:
    """Until no counted call weighs on the window: this minute's weigh until the end of the
    next one, the previous minute's until the end of this one."""
    if current:
        return 2 * WINDOW_MS - elapsed
    if previous:
        return WINDOW_MS - elapsed
    return 0


def duration(ms: int) -> str:
    """A duration as OpenAI writes `x-ratelimit-reset-*`: 20ms, 1s, 59.6s, 6m0s, 1h0m0s."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    seconds = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def retry_after_seconds(ms: int) -> int:
    """`retry-after` in whole seconds, rounded up: never earlier than the call would fit."""
    return max(1, -(-ms // 1000))


def headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": duration(reset_ms),
    }
