"""The per-key request window's arithmetic, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controldb.ratelimit import (
    WINDOW_MS,
    RateLimited,
    duration,
    minute_of,
    retry_after_seconds,
    take,
)

MINUTE_START = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
M, _ = minute_of(MINUTE_START)


def at(seconds: float) -> datetime:
    return MINUTE_START + timedelta(seconds=seconds)


def test_minute_of_counts_whole_minutes_and_milliseconds_into_them() -> None:
    minute, elapsed = minute_of(at(59.999))
    assert (minute, elapsed) == (M, 59_999)
    assert minute_of(at(60)) == (M + 1, 0)


def test_a_fresh_key_gets_exactly_its_limit_in_one_minute() -> None:
    stored: tuple[int | None, int, int] = (None, 0, 0)
    remaining = []
    for second in range(3):
        status, window = take(3, *stored, at(second))
        remaining.append(status.remaining)
        stored = (window.minute, window.current, window.previous)
    assert remaining == [2, 1, 0]
    with pytest.raises(RateLimited) as refused:
        take(3, *stored, at(10))
    # This minute's three weigh on the next minute until a third of it has passed:
    # 3 * (60 - e) / 60 <= 2  <=>  e >= 20 s, counted from 12:00:10 -> 50 s + 20 s.
    assert refused.value.retry_after_ms == 70_000
    assert refused.value.reset_ms == 2 * WINDOW_MS - 10_000


def test_the_previous_minute_weighs_by_how_much_of_it_is_still_in_the_window() -> None:
    # Four calls last minute, limit 4: at 15 s, 4 * 45/60 = 3 still count, so one fits.
    status, window = take(4, M - 1, 4, 0, at(15))
    assert (window.minute, window.current, window.previous) == (M, 1, 4)
    assert status.remaining == 0
    with pytest.raises(RateLimited) as refused:
        take(4, window.minute, window.current, window.previous, at(15))
    # 4 * (60 - e)/60 + 1 + 1 <= 4  <=>  e >= 30 s: 15 s from now.
    assert refused.value.retry_after_ms == 15_000
    status, _ = take(4, window.minute, window.current, window.previous, at(30))
    assert status.remaining == 0


def test_counts_older_than_the_previous_minute_are_forgotten() -> None:
    status, window = take(2, M - 2, 2, 2, at(1))
    assert (window.current, window.previous, status.remaining) == (1, 0, 1)


def test_a_clock_behind_another_edges_counts_in_the_later_minute() -> None:
    status, window = take(2, M + 1, 1, 0, at(59))
    assert (window.minute, window.current, status.remaining) == (M + 1, 2, 0)
    with pytest.raises(RateLimited):
        take(2, window.minute, window.current, window.previous, at(59))


def test_remaining_never_counts_a_partly_expired_call_as_free() -> None:
    # One call last minute at 30 s weighs 0.5: remaining is floor(2 - 0.5 - 1) = 0.
    status, _ = take(2, M - 1, 1, 0, at(30))
    assert status.remaining == 0
    assert status.reset_ms == 2 * WINDOW_MS - 30_000


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (20, "20ms"),
        (1_000, "1s"),
        (59_600, "59.6s"),
        (61_250, "1m1.25s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_retry_after_rounds_up_to_whole_seconds_and_is_never_zero() -> None:
    assert [retry_after_seconds(ms) for ms in (0, 1, 1_000, 1_001)] == [1, 1, 1, 2]
