"""The router's per-attempt metrics (breaker state lives in breaker.py, calls in server.py).

Labelled children are cached in plain dicts: `Counter.labels()` takes a lock and builds a
tuple on every call, and an attempt is on the hot path. Label values are catalog provider
names and a fixed set of outcomes, so the caches stay as small as the catalog.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

# From building the provider's request to its parsed answer (a stream: its first chunk).
ATTEMPT_SECONDS = Histogram(
    "aig_router_upstream_attempt_seconds",
    "Duration of one upstream attempt, by provider and outcome (ok, error, cancelled)",
    ["provider", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FAILOVERS = Counter(
    "aig_router_failovers_total",
    "Calls moved to the next route after a failed attempt, by the provider that failed",
    ["provider"],
)

_attempt_children: dict[tuple[str, str], Any] = {}
_failover_children: dict[str, Any] = {}


def observe_attempt(provider: str, outcome: str, seconds: float) -> None:
    child = _attempt_children.get((provider, outcome))
    if child is None:
        child = _attempt_children[(provider, outcome)] = ATTEMPT_SECONDS.labels(provider, outcome)
    child.observe(seconds)


def count_failover(provider: str) -> None:
    child = _failover_children.get(provider)
    if child is None:
        child = _failover_children[provider] = FAILOVERS.labels(provider)
    child.inc()
