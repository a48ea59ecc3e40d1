"""The failed-auth token buckets, on a fake clock."""

from __future__ import annotations

import pytest

from edge.throttle import FailedAuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_free_then_each_failure_waits_for_a_refill() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(burst=3, per_minute=6, clock=clock)  # one per 10 s
    subject = ("ip:1.2.3.4",)
    for _ in range(3):
        assert throttle.retry_after_s(subject) == 0
        throttle.record_failure(subject)
    assert throttle.retry_after_s(subject) == 10
    clock.now += 4
    assert throttle.retry_after_s(subject) == 6
    clock.now += 6
    assert throttle.retry_after_s(subject) == 0
    throttle.record_failure(subject)
    assert throttle.retry_after_s(subject) == 10


def test_subjects_are_independent_and_the_worst_one_decides() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(burst=1, per_minute=60, clock=clock)
    throttle.record_failure(("ip:a",))
    assert throttle.retry_after_s(("ip:b",)) == 0
    assert throttle.retry_after_s(("ip:b", "ip:a")) == 1


def test_a_refilled_subject_is_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = FailedAuthThrottle(burst=2, per_minute=60, max_subjects=10, clock=clock)
    for index in range(50):
        throttle.record_failure((f"ip:{index}",))
    assert len(throttle._buckets) == 10
    clock.now += 60
    throttle.retry_after_s(tuple(f"ip:{index}" for index in range(50)))
    assert len(throttle._buckets) == 0


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FailedAuthThrottle(burst=0)
    with pytest.raises(ValueError):
        FailedAuthThrottle(per_minute=0)
