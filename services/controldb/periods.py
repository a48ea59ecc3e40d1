"""The spend periods caps are counted in: UTC days and UTC months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


# Formatted by hand, not with strftime: settlement names two periods per scope for every
# event it settles, and strftime took ~12 % of billing's time draining a backlog (py-spy).
def day_period(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"


def month_period(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def next_day(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def next_month(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=32)).replace(day=1)
