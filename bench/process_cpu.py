"""CPU per call of each aig service at fixed rates, on a fresh stack pinned as `make bench`
pins it (gateway processes on CPU 1; sandbox, broker and oha on CPU 0).

`python -m bench.process_cpu` — about a minute. The default run reports only the whole
stack's CPU per call; this splits it by service and shows how busy the gateway's core is,
with nothing else (no LiteLLM, no earlier phases) sharing that core.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .aig_target import (
    create_api_key,
    gateway_processes,
    infra_processes,
    sandbox_process,
    start_stack,
)
from .install import ensure_installed
from .loadgen import Request, run_oha
from .plan import SANDBOX_ENV
from .procs import cpu_seconds, wait_until_quiet
from .run import CALL_BODY, DRIVER_CPUS, TARGET_CPUS

RATES = (50, 200, 200)
SECONDS = 10
CONNECTIONS = 128


def _wait_for_a_quiet_router(pid: int) -> None:
    """oha's deadline ends the warm-up with a call in flight, which the router bills as
    abandoned: that first token count loads the tokenizer on a worker thread (~0.5 s of
    CPU, spread over seconds beside the event loop; EXTRAS.md), and the first rate measured
    was charged with it (1.34 ms of router CPU per call at 50/s, 0.37-0.39 at 200/s). Quiet
    is under 1 % of a core over a second: an idle router."""
    if not wait_until_quiet(lambda: cpu_seconds(pid), window_s=1.0, quiet_s=0.01, limit_s=30.0):
        print("the router was still busy 30 s after the warm-up", flush=True)


def main() -> None:
    ensure_installed()
    stack = start_stack(Path(tempfile.mkdtemp(prefix="aig-process-cpu-")), SANDBOX_ENV)
    try:
        gateway, sandbox = gateway_processes(stack), sandbox_process(stack)
        gateway.pin(TARGET_CPUS)
        sandbox.pin(DRIVER_CPUS)
        infra_processes(stack).pin(DRIVER_CPUS)
        pids = {**gateway.roots, **sandbox.roots}
        request = Request(
            f"{stack.edge_url}/v1/chat/completions",
            create_api_key(stack),
            json.dumps(CALL_BODY).encode(),
        )
        run_oha(request, seconds=5, connections=16, rate=50, cpus=DRIVER_CPUS)  # warm-up
        _wait_for_a_quiet_router(gateway.roots["router"])
        for rate in RATES:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            result = run_oha(
                request, seconds=SECONDS, connections=CONNECTIONS, rate=rate, cpus=DRIVER_CPUS
            )
            elapsed = time.monotonic() - started
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            per_call = {name: f"{used[name] / max(1, result.ok) * 1000:.2f}" for name in pids}
            busy = sum(used[name] for name in gateway.roots) / elapsed
            print(
                f"{rate}/s: got {result.rps:.1f}/s, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms; gateway core {busy:.0%} busy; "
                f"CPU ms per call {per_call}",
                flush=True,
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
