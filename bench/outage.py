"""Issue 5's benchmark: call latency while a provider is down, with circuit breakers on and
off, as ratios against the same route's healthy latency measured in the same run.

The outage is a dead upstream that takes `DEAD_UPSTREAM_MS` to fail with 503 on every call
(the sandbox's `delay_ms` fault). With breakers, after a few failures calls go straight to
the fallback; without them, every call waits on the dead provider first.
python -m bench.outage
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .aig_target import create_api_key, start_stack
from .plan import SANDBOX_ENV

DEAD_UPSTREAM_MS = 1000
CALLS = 60
OUT = Path(__file__).parent / "out" / "outage.json"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Are you up?"}]}


def _latencies(base: str, key: str, calls: int) -> tuple[list[float], list[str]]:
    samples, providers = [], []
    with httpx.Client(timeout=60, headers={"authorization": f"Bearer {key}"}) as client:
        for _ in range(calls):
            started = time.perf_counter()
            response = client.post(f"{base}/v1/chat/completions", json=BODY)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            providers.append(response.headers["x-aig-provider"])
    return samples, providers


def _run(breaker_failures: int, calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        stack = start_stack(
            Path(directory), {**SANDBOX_ENV, "AIG_BREAKER_FAILURES": str(breaker_failures)}
        )
        try:
            key = create_api_key(stack)
            _latencies(stack.edge_url, key, 10)  # warm-up
            healthy, _ = _latencies(stack.edge_url, key, calls)
            httpx.post(
                f"{stack.sandbox_url}/_sandbox/faults",
                json={
                    "provider": "openai",
                    "status": 503,
                    "count": 1_000_000,
                    "delay_ms": DEAD_UPSTREAM_MS,
                },
            ).raise_for_status()
            outage, providers = _latencies(stack.edge_url, key, calls)
        finally:
            stack.stop()
    healthy_p50 = statistics.median(healthy)
    outage_p50 = statistics.median(outage)
    return {
        "calls": calls,
        "healthy_p50_ms": round(healthy_p50, 1),
        "outage_p50_ms": round(outage_p50, 1),
        "outage_over_healthy_p50": round(outage_p50 / healthy_p50, 2),
        "served_by_fallback": providers.count("openrouter"),
    }


def main() -> None:
    results = {
        "dead_upstream_ms": DEAD_UPSTREAM_MS,
        "breakers_on": _run(breaker_failures=5, calls=CALLS),
        "breakers_off": _run(breaker_failures=1_000_000_000, calls=CALLS // 4),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
