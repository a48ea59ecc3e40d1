"""Where a chat call's time goes inside the gateway, stage by stage, at 50 and 200 calls/s.

`python -m bench.stages` — about two minutes. On a fresh stack pinned as `make bench` pins
it (gateway processes on CPU 1; sandbox, broker and oha on CPU 0), one more edge with the
router in its process runs `python -m bench.stage_edge`, which times every call's stages
(authentication, request, admission, the hand-off to the router, the router, metering, the
response) and takes the upstream's time out of each call. Calls to it alternate with calls
straight to the sandbox, so oha's p50 overhead over direct, measured in the same rounds,
stands beside the stages: what the stages do not cover (uvicorn before and after the app,
the kernel, a core waking up) is the difference between the two.

Each figure is a median over every call of a rate. The same stage costs 2-3 times more at
50 calls/s than at 200 (bench/README.md, "Where the p50 overhead at 50 calls/s goes"): at
50/s the core idles between calls and the code runs cold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack.processes import Service, free_port

from .aig_target import (
    _wait_listening,
    create_api_key,
    gateway_processes,
    infra_processes,
    sandbox_process,
    start_stack,
)
from .loadgen import Request, run_oha
from .plan import SANDBOX_ENV
from .procs import ProcessGroup, cpu_seconds, wait_until_quiet
from .run import DRIVER_CPUS, TARGET_CPUS, _requests
from .stage_edge import STAGES, STAGES_OUT_ENV

CONNECTIONS = 128


def start_stage_edge(stack: Any, out: Path) -> tuple[Service, str]:
    first = stack.service("edge")
    port = free_port()
    edge = Service(
        "edge-stages",
        "bench.stage_edge",
        {
            **stack.replica_env(first.env, "edge-stages"),
            "AIG_EDGE_PORT": str(port),
            "AIG_EDGE_IN_PROCESS_ROUTER": "1",
            "AIG_EDGE_REUSE_PORT": "0",
            STAGES_OUT_ENV: str(out),
        },
        f"http://127.0.0.1:{port}/readyz",
        first.log_path.with_name("edge-stages.log"),
    )
    stack.services.append(edge)  # stopped with the stack
    edge.start()
    _wait_listening(edge)
    return edge, f"http://127.0.0.1:{port}/v1/chat/completions"


def stage_medians(pid: int, out: Path) -> dict[str, Any]:
    """The stage edge's medians since the last ask (SIGUSR1 writes them to `out`)."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists() or not out.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the stage edge did not write its stages")
        time.sleep(0.05)
    medians: dict[str, Any] = json.loads(out.read_text())
    return medians


def measure(rates: list[int], rounds: int, seconds: float) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="aig-stages-") as tmp:
        out = Path(tmp) / "stages.json"
        stack = start_stack(Path(tmp) / "aig", SANDBOX_ENV)
        try:
            edge, url = start_stage_edge(stack, out)
            assert edge.process is not None
            pid = edge.process.pid
            gateway = gateway_processes(stack)
            ProcessGroup({**gateway.roots, "edge-stages": pid}).pin(TARGET_CPUS)
            sandbox_process(stack).pin(DRIVER_CPUS)
            infra_processes(stack).pin(DRIVER_CPUS)
            os.sched_setaffinity(0, DRIVER_CPUS)
            key = create_api_key(stack)
            staged = _requests(url, key)[0]
            direct = _requests(f"{stack.sandbox_url}/openai/v1/chat/completions", "sandbox-key")
            run_oha(staged, seconds=4, connections=16, rate=50, cpus=DRIVER_CPUS)  # warm-up
            wait_until_quiet(lambda: cpu_seconds(pid), window_s=1.0, quiet_s=0.01, limit_s=30.0)
            for rate in rates:
                stage_medians(pid, out)  # counting starts here
                overheads = []
                for _ in range(rounds):
                    base = _p50(direct[0], rate, seconds)
                    overheads.append(_p50(staged, rate, seconds) - base)
                results[rate] = {
                    **stage_medians(pid, out),
                    "p50_overhead_ms": round(statistics.median(overheads), 3),
                }
        finally:
            stack.stop()
    return results


def _p50(request: Request, rate: int, seconds: float) -> float:
    result = run_oha(request, seconds=seconds, connections=CONNECTIONS, rate=rate, cpus=DRIVER_CPUS)
    return result.p50_ms


def table(results: dict[int, dict[str, Any]]) -> str:
    rates = sorted(results)
    lines = [
        "| stage | what it is | " + " | ".join(f"{rate}/s, µs" for rate in rates) + " |",
        "|---|---|" + "---|" * len(rates),
    ]
    for stage, meaning in STAGES.items():
        cells = [f"{results[rate]['stages_us'].get(stage, float('nan')):.0f}" for rate in rates]
        lines.append(f"| {stage} | {meaning} | " + " | ".join(cells) + " |")
    overheads = [f"{results[rate]['p50_overhead_ms'] * 1000:.0f}" for rate in rates]
    lines.append("| oha's p50 overhead over direct | the whole hop, as a client sees it | ")
    lines[-1] += " | ".join(overheads) + " |"
    calls = ", ".join(f"{results[rate]['calls']} at {rate}/s" for rate in rates)
    lines.append("")
    lines.append(f"Medians per call over {calls}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,200", help="calls/s, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]
    print(table(measure(rates, args.rounds, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
