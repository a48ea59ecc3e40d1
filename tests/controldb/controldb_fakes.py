"""Test doubles shared by the control database tests."""

from __future__ import annotations

from datetime import datetime


class FakeClock:
    """A monotonic clock that moves only when told to, for TTL tests without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class UtcClock:
    """A UTC wall clock that moves only when told to, for money's periods and windows."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now
