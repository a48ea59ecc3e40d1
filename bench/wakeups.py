"""How much of the p50 overhead at a low call rate is the gateway's core waking up.

At 50 calls/s the gateway's core is idle between calls, and this machine is a KVM guest
whose idle vCPU halts: a packet for a halted vCPU waits for the host to run it again. The
default bench gives the gateway a core of its own (CPU 1) and puts oha and the sandbox on
the other (CPU 0), so a call through aig crosses cores four times (oha → edge → sandbox →
edge → oha), each time to a core that may be halted, where **direct** (oha → sandbox on
the same core) crosses none.

This measures the p50 overhead over direct twice, alternating: with the gateway's core left
idle as in the default bench, and with it kept awake by a busy loop at SCHED_IDLE priority
(it runs only when nothing else wants that core, so it takes no CPU from the gateway; its
only effect is that the core never halts). The difference is what the idle core's wake-ups
cost each call. A diagnostic, not a way to run aig: a spinning core costs power and, on a
shared host, a tenant's neighbours.

Before that, with nothing else running, it times one small step of a call's code right
after the core idled for 0.1 to 20 ms, left idle and kept awake (`cold_code`): how much
slower code runs when its caches have gone cold, which is most of why every stage of a call
costs more at 50 calls/s than at 200, and why a call that crosses two processes (the
router apart) pays twice.

python -m bench.wakeups (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from . import aig_target
from .install import ensure_installed
from .loadgen import Request, run_oha
from .plan import SANDBOX_ENV
from .run import CALL_BODY, DRIVER_CPUS, TARGET_CPUS

RATE = 50
SECONDS = 12
ROUNDS = 3
CONNECTIONS = 16
CONDITIONS = ("idle", "awake")

# Pinned to the gateway's cores and given SCHED_IDLE before it starts spinning.
_SPINNER = (
    "import os, sys\n"
    "os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')})\n"
    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "while True:\n"
    "    pass\n"
)


@contextmanager
def _kept_awake(cpus: set[int]) -> Iterator[None]:
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPINNER, str(cpu)]) for cpu in sorted(cpus)
    ]
    try:
        time.sleep(0.5)  # running, at idle priority, before the load starts
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


# How long the core sleeps before the timed code runs, and how often each is sampled.
COLD_GAPS_MS = (0.1, 1.0, 3.0, 20.0)
COLD_SAMPLES = 200


def _parse_after(gap_s: float, samples: int) -> float:
    """Median µs to parse a call's JSON body, run right after sleeping `gap_s` (none: back
    to back, everything warm)."""
    body = json.dumps(CALL_BODY)
    taken: list[int] = []
    for _ in range(samples):
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter_ns()
        json.loads(body)
        taken.append(time.perf_counter_ns() - started)
    return round(statistics.median(taken) / 1000, 1)


def cold_code(samples: int = COLD_SAMPLES) -> dict[str, Any]:
    """What idling does to the code that runs first after it, on the gateway's core with
    nothing else running: one small step (json.loads of a call's body) timed right after
    a sleep of each length, with the core left idle and kept awake (the spinner above).
    If only the core's halt made woken code slow, the awake figures would stay warm."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, TARGET_CPUS)
    try:
        figures: dict[str, Any] = {"warm_us": _parse_after(0, samples * 5)}
        for condition in CONDITIONS:
            with _kept_awake(TARGET_CPUS) if condition == "awake" else nullcontext():
                figures[condition] = {
                    f"{gap:g}": _parse_after(gap / 1000, samples) for gap in COLD_GAPS_MS
                }
    finally:
        os.sched_setaffinity(0, previous)
    return figures


def measure(rounds: int = ROUNDS, seconds: float = SECONDS, rate: int = RATE) -> dict[str, Any]:
    cold = cold_code()  # before the stack starts: nothing else on the core
    stack = aig_target.start_stack(Path(tempfile.mkdtemp(prefix="aig-wakeups-")), SANDBOX_ENV)
    try:
        in_process_url = aig_target.start_in_process_edges(stack)
        for in_process in (False, True):
            aig_target.gateway_processes(stack, in_process_router=in_process).pin(TARGET_CPUS)
        aig_target.sandbox_process(stack).pin(DRIVER_CPUS)
        aig_target.infra_processes(stack).pin(DRIVER_CPUS)
        key = aig_target.create_api_key(stack)
        body = json.dumps(CALL_BODY).encode()
        requests = {
            "direct": Request(
                f"{stack.sandbox_url}/openai/v1/chat/completions", "sandbox-key", body
            ),
            "aig": Request(f"{stack.edge_url}/v1/chat/completions", key, body),
            "aig-inproc": Request(f"{in_process_url}/v1/chat/completions", key, body),
        }
        for request in requests.values():  # warm every path (and load the tokenizer)
            run_oha(request, seconds=4, connections=CONNECTIONS, rate=rate, cpus=DRIVER_CPUS)
        time.sleep(4)
        p50: dict[str, dict[str, list[float]]] = {
            condition: {name: [] for name in requests} for condition in CONDITIONS
        }
        for _ in range(rounds):
            for condition in CONDITIONS:
                with _kept_awake(TARGET_CPUS) if condition == "awake" else nullcontext():
                    for name, request in requests.items():
                        result = run_oha(
                            request,
                            seconds=seconds,
                            connections=CONNECTIONS,
                            rate=rate,
                            cpus=DRIVER_CPUS,
                        )
                        if result.errors:
                            raise RuntimeError(f"{name} ({condition}): {result.error_kinds}")
                        p50[condition][name].append(result.p50_ms)
    finally:
        stack.stop()
    return {**_figures(p50, rate, seconds, rounds), "cold_code": cold}


def _figures(
    p50: dict[str, dict[str, list[float]]], rate: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Per condition and gateway, the median over the rounds of each round's p50 overhead
    (the gateway's p50 minus direct's p50 measured beside it in the same round)."""
    overhead: dict[str, dict[str, float]] = {}
    for condition, by_target in p50.items():
        direct = by_target["direct"]
        overhead[condition] = {
            name: round(statistics.median(g - d for g, d in zip(gw, direct, strict=True)), 2)
            for name, gw in by_target.items()
            if name != "direct"
        }
    return {
        "rate": rate,
        "seconds": seconds,
        "rounds": rounds,
        "p50_ms": p50,
        "p50_overhead_ms": overhead,
        "wakeup_share_ms": {
            name: round(overhead["idle"][name] - overhead["awake"][name], 2)
            for name in overhead["idle"]
        },
    }


def markdown(figures: dict[str, Any]) -> list[str]:
    idle, awake = figures["p50_overhead_ms"]["idle"], figures["p50_overhead_ms"]["awake"]
    share = figures["wakeup_share_ms"]
    return [
        f"{figures['rate']} calls/s, {figures['rounds']} rounds of {figures['seconds']:g} s per "
        "gateway and condition, alternating; each figure is the median over the rounds of "
        "the gateway's p50 minus direct's p50 in the same round.",
        "",
        "| gateway | p50 overhead, its core idle between calls (as in the default bench) "
        "| p50 overhead, its core kept awake | what the wake-ups cost |",
        "|---|---|---|---|",
        *(
            f"| {name} | {idle[name]:.2f} ms | {awake[name]:.2f} ms | {share[name]:.2f} ms |"
            for name in idle
        ),
        *_cold_code_markdown(figures["cold_code"]),
    ]


def _cold_code_markdown(cold: dict[str, Any]) -> list[str]:
    gaps = [f"{gap:g}" for gap in COLD_GAPS_MS]
    return [
        "",
        "Code that runs first after the core idled, before any stack starts: json.loads of "
        f"a call's body takes {cold['warm_us']} µs back to back. Right after a sleep of:",
        "",
        "| the gateway's core | " + " | ".join(f"{gap} ms" for gap in gaps) + " |",
        "|---|" + "---|" * len(gaps),
        *(
            f"| {label} | "
            + " | ".join(
                f"{cold[condition][gap]} µs ({cold[condition][gap] / cold['warm_us']:.0f}x)"
                for gap in gaps
            )
            + " |"
            for condition, label in (("idle", "left idle"), ("awake", "kept awake"))
        ),
    ]


def main() -> None:
    ensure_installed()
    figures = measure()
    print("\n".join(markdown(figures)))


if __name__ == "__main__":
    main()
