"""Circuit breaker states with a fake clock."""

from __future__ import annotations

from router.breaker import Breakers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_probes_after_cooldown() -> None:
    clock = Clock()
    breakers = Breakers(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        breakers.record_failure("openai", "gpt-4o")
    assert breakers.allow("openai", "gpt-4o")
    breakers.record_failure("openai", "gpt-4o")
    assert not breakers.allow("openai", "gpt-4o")
    assert not breakers.allow("openai", "gpt-4o-mini")  # the provider itself is open
    assert breakers.allow("anthropic", "claude")

    clock.now += 10
    assert breakers.allow("openai", "gpt-4o")  # the half-open probe
    assert not breakers.allow("openai", "gpt-4o")  # only one probe at a time
    breakers.record_success("openai", "gpt-4o")
    assert breakers.allow("openai", "gpt-4o")
    assert not breakers.is_open("openai", "gpt-4o")


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breakers = Breakers(failure_threshold=1, cooldown_s=5, clock=clock)
    breakers.record_failure("google", "gemini")
    clock.now += 5
    assert breakers.allow("google", "gemini")
    breakers.record_failure("google", "gemini")
    assert not breakers.allow("google", "gemini")
    clock.now += 4.9
    assert not breakers.allow("google", "gemini")
    clock.now += 0.2
    assert breakers.allow("google", "gemini")


def test_success_resets_the_count() -> None:
    breakers = Breakers(failure_threshold=2, cooldown_s=5, clock=Clock())
    breakers.record_failure("openai", "m")
    breakers.record_success("openai", "m")
    breakers.record_failure("openai", "m")
    assert breakers.allow("openai", "m")
