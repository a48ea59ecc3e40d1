"""The spend periods caps are counted in: UTC days and UTC months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def day_period(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def month_period(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_day(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def next_month(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=32)).replace(day=1)
