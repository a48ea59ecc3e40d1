"""How exactly the sandbox keeps its 20 ms latency: `asyncio.sleep` against `precise_sleep`.

Every overhead in RESULTS.md is a difference from **direct**, the sandbox's own latency, so
that latency must last the same whoever calls. A sandbox under load has its event loop
woken every fraction of a millisecond by other connections; this reproduces that with a
thread writing to a socket every 0.2 ms, and times sleeps of 20 ms begun at every point of
a millisecond, on uvloop (as `python -m sandbox` runs) and on asyncio's own loop.

python -m bench.upstream_timer (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from sandbox.timer import precise_sleep

from .samples import sample_at

LATENCY_S = 0.020
SLEEPS = 100
TRAFFIC_EVERY_S = 0.0002
STAGGER_S = 0.0013  # between sleeps, so their starts fall at every point of a millisecond

Sleep = Callable[[float], Awaitable[None]]


async def lateness_us(
    sleep: Sleep, *, sleeps: int = SLEEPS, latency_s: float = LATENCY_S
) -> list[float]:
    """Microseconds each of `sleeps` sleeps of `latency_s` lasted beyond it (negative: it
    ended early), on the running loop woken every TRAFFIC_EVERY_S by a socket."""
    loop = asyncio.get_running_loop()
    sender, receiver = socket.socketpair()
    receiver.setblocking(False)
    loop.add_reader(receiver.fileno(), receiver.recv, 4096)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            sender.send(b"x")
            time.sleep(TRAFFIC_EVERY_S)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    lateness = []
    try:
        for _ in range(sleeps):
            await asyncio.sleep(STAGGER_S)
            started = time.monotonic_ns()
            await sleep(latency_s)
            lateness.append((time.monotonic_ns() - started) / 1000 - latency_s * 1e6)
    finally:
        stop.set()
        thread.join()
        loop.remove_reader(receiver.fileno())
        sender.close()
        receiver.close()
    return lateness


def _summary(lateness: list[float]) -> dict[str, float]:
    return {
        "min_us": round(min(lateness), 1),
        "p10_us": round(sample_at(lateness, 0.10), 1),
        "p50_us": round(sample_at(lateness, 0.50), 1),
        "p90_us": round(sample_at(lateness, 0.90), 1),
        "max_us": round(max(lateness), 1),
        "early": sum(1 for value in lateness if value < 0),
    }


def measure() -> dict[str, Any]:
    runners: dict[str, Callable[[Any], list[float]]] = {
        "uvloop": uvloop.run,
        "asyncio": asyncio.run,
    }
    sleeps: dict[str, Sleep] = {"asyncio.sleep": asyncio.sleep, "precise_sleep": precise_sleep}
    results: dict[str, Any] = {"latency_ms": LATENCY_S * 1000, "sleeps": SLEEPS, "rows": []}
    for loop_name, run in runners.items():
        for sleep_name, sleep in sleeps.items():
            row = _summary(run(lateness_us(sleep)))
            results["rows"].append({"loop": loop_name, "sleep": sleep_name, **row})
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        f"{results['sleeps']} sleeps of {results['latency_ms']:g} ms each, begun at every point "
        "of a millisecond, on a loop woken every 0.2 ms by a socket (a sandbox under load). "
        "How much longer than asked each lasted, µs (negative: it ended early):",
        "",
        "| loop | sleep | min | p10 | p50 | p90 | max | ended early | p90 - p10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['loop']} | `{row['sleep']}` | {row['min_us']:.0f} | {row['p10_us']:.0f} | "
            f"{row['p50_us']:.0f} | {row['p90_us']:.0f} | {row['max_us']:.0f} | "
            f"{row['early']} of {results['sleeps']} | {row['p90_us'] - row['p10_us']:.0f} |"
        )
    return lines


if __name__ == "__main__":
    measured = measure()
    print(json.dumps(measured, indent=2))
    print("\n".join(markdown(measured)))
