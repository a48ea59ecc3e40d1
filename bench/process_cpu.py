"""CPU per call of each aig service at fixed rates, on a fresh stack pinned as `make bench`
pins it (gateway processes on CPU 1; sandbox, broker and oha on CPU 0).

`python -m bench.process_cpu` — about a minute. The default run reports only the whole
stack's CPU per call; this splits it by service and shows how busy the gateway's core is,
with nothing else (no LiteLLM, no earlier phases) sharing that core.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from .aig_target import create_api_key, infra_processes, start_stack
from .loadgen import Request, run_oha
from .plan import SANDBOX_ENV
from .procs import pin
from .run import CALL_BODY

GATEWAY_CPU = 1
DRIVER_CPU = 0
RATES = (50, 200, 200)
SECONDS = 10
CONNECTIONS = 128
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`."""
    ticks = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def main() -> None:
    stack = start_stack(Path(tempfile.mkdtemp(prefix="aig-process-cpu-")), SANDBOX_ENV)
    try:
        pids = {s.name: s.process.pid for s in stack.services if s.process is not None}
        for name, pid in pids.items():
            pin(pid, {DRIVER_CPU} if name == "sandbox" else {GATEWAY_CPU})
        for broker in infra_processes(stack).roots.values():
            pin(broker, {DRIVER_CPU})
        request = Request(
            f"{stack.edge_url}/v1/chat/completions",
            create_api_key(stack),
            json.dumps(CALL_BODY).encode(),
        )
        run_oha(request, seconds=5, connections=16, rate=50, cpus={DRIVER_CPU})  # warm-up
        gateway = [name for name in pids if name != "sandbox"]
        for rate in RATES:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            result = run_oha(
                request, seconds=SECONDS, connections=CONNECTIONS, rate=rate, cpus={DRIVER_CPU}
            )
            elapsed = time.monotonic() - started
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            per_call = {name: f"{used[name] / max(1, result.ok) * 1000:.2f}" for name in pids}
            busy = sum(used[name] for name in gateway) / elapsed
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
