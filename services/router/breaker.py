"""Circuit breakers per provider and per provider+model, local to one router process.

Closed: calls flow. After `failure_threshold` consecutive retryable failures the breaker
opens and calls skip that route at once instead of waiting on a dead upstream. After
`cooldown_s` it lets one probe through (half-open); a success closes it, a failure opens it
for another cooldown. With several router replicas each learns on its own: an outage opens
every replica's breaker after that replica's own few failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

BREAKER_OPEN = Gauge("aig_router_breaker_open", "1 while a breaker is open", ["breaker"])


@dataclass(slots=True)
class _State:
    consecutive_failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._states: dict[str, _State] = {}

    @staticmethod
    def keys(provider: str, upstream_id: str) -> tuple[str, str]:
        return provider, f"{provider}/{upstream_id}"

    def allow(self, provider: str, upstream_id: str) -> bool:
        return all(self._allow(key) for key in self.keys(provider, upstream_id))

    def is_open(self, provider: str, upstream_id: str) -> bool:
        now = self._clock()
        return any(
            self._states.get(key, _State()).open_until > now
            for key in self.keys(provider, upstream_id)
        )

    def _allow(self, key: str) -> bool:
        state = self._states.get(key)
        if state is None or state.open_until == 0.0:
            return True
        if self._clock() < state.open_until:
            return False
        if state.probing:
            return False
        state.probing = True  # half-open: this caller is the probe
        return True

    def record_success(self, provider: str, upstream_id: str) -> None:
        for key in self.keys(provider, upstream_id):
            if key in self._states:
                self._states[key] = _State()
                BREAKER_OPEN.labels(key).set(0)

    def record_failure(self, provider: str, upstream_id: str) -> None:
        for key in self.keys(provider, upstream_id):
            state = self._states.setdefault(key, _State())
            state.consecutive_failures += 1
            if state.probing or state.consecutive_failures >= self._threshold:
                state.open_until = self._clock() + self._cooldown_s
                state.probing = False
                BREAKER_OPEN.labels(key).set(1)
