"""Caps count spend per UTC day and UTC month, whatever offset a moment was written in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from controldb.periods import day_period, month_period, next_day, next_month


def test_a_moment_late_in_a_western_evening_counts_in_the_next_utc_day_and_month() -> None:
    moment = datetime(2026, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert (day_period(moment), month_period(moment)) == ("2026-02-01", "2026-02")
    assert next_day(moment) == datetime(2026, 2, 2, tzinfo=UTC)
    assert next_month(moment) == datetime(2026, 3, 1, tzinfo=UTC)


def test_periods_are_zero_padded_and_end_at_the_year_end() -> None:
    moment = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert (day_period(moment), month_period(moment)) == ("2026-12-31", "2026-12")
    assert day_period(datetime(2026, 3, 4, tzinfo=UTC)) == "2026-03-04"
    assert next_month(moment) == datetime(2027, 1, 1, tzinfo=UTC)
