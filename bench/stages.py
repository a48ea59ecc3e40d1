"""Where a chat call's time goes inside the gateway, stage by stage, at 50 and 200 calls/s.

`python -m bench.stages` — about two minutes. On a fresh stack pinned as `make bench` pins
it (gateway processes on CPU 1; sandbox, broker and oha on CPU 0), one more edge with the
router in its process runs `python -m bench.stage_edge`, which times every call's stages
(authentication, request, admission, the hand-off to the router, the router, metering, the
response) and takes the upstream's time out of each call. Calls to it alternate with calls
straight to the sandbox, so oha's p50 overhead over direct, measured in the same rounds,
stands beside the stages: what the stages do not cover (uvicorn before and after the app,
the kernel, a core waking up) is the difference between the two.

`python -m bench.stages --against REV` — about five minutes: the same for this work tree's
services and for those of git revision REV (a worktree of it, removed afterwards), two
stage edges on one stack, measured in alternation. Two edges on one stack are not equal:
in an A/A the edge started first measured ~30 µs less own time at 50/s (bench/README.md), so
the stack is run twice, each tree started first once, and each figure is the mean of the
two orders. Both trees must have the functions `bench/stage_edge.py` clocks.

Each figure is a median over every call of a rate. The same stage costs 2-3 times more at
50 calls/s than at 200 (bench/README.md, "A call's time stage by stage"): at 50/s the core
idles between calls and the code runs cold.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.processes import free_port
from devstack.stack import Stack

from .aig_target import (
    create_api_key,
    gateway_processes,
    infra_processes,
    sandbox_process,
    start_in_process_edge,
    start_stack,
)
from .install import ensure_installed
from .loadgen import Request, run_oha
from .plan import SANDBOX_ENV
from .procs import ProcessGroup, cpu_seconds, wait_until_quiet
from .run import DRIVER_CPUS, TARGET_CPUS, chat_requests
from .stage_edge import STAGES, STAGES_OUT_ENV

CONNECTIONS = 128
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tree:
    """Whose services a stage edge runs: this work tree's (`services` None) or another's."""

    label: str
    services: Path | None = None

    def env(self) -> dict[str, str]:
        if self.services is None:
            return {}
        # Ahead of the environment's own services on sys.path; `bench` is this tree's.
        return {"PYTHONPATH": f"{self.services / 'services'}:{self.services / 'gen'}"}


@dataclass
class StageEdge:
    tree: Tree
    pid: int
    request: Request
    out: Path

    def medians(self) -> dict[str, Any]:
        """Its medians since the last ask (SIGUSR1 writes them to `out`)."""
        self.out.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.out.exists() or not self.out.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.tree.label} stage edge did not write its stages")
            time.sleep(0.05)
        medians: dict[str, Any] = json.loads(self.out.read_text())
        return medians


def start_stage_edge(stack: Stack, tree: Tree, work: Path, key: str) -> StageEdge:
    out = work / f"stages-{tree.label}.json"
    port = free_port()
    edge = start_in_process_edge(
        stack,
        f"edge-stages-{tree.label}",
        port,
        module="bench.stage_edge",
        extra_env={STAGES_OUT_ENV: str(out), **tree.env()},
    )
    assert edge.process is not None
    request = chat_requests(f"http://127.0.0.1:{port}/v1/chat/completions", key)[0]
    return StageEdge(tree, edge.process.pid, request, out)


def measure(
    trees: list[Tree], rates: list[int], rounds: int, seconds: float
) -> dict[str, dict[int, dict[str, Any]]]:
    """One stack, a stage edge per tree, started in the order given; per tree and rate the
    stage medians and the median p50 overhead over direct of its rounds."""
    results: dict[str, dict[int, dict[str, Any]]] = {tree.label: {} for tree in trees}
    with tempfile.TemporaryDirectory(prefix="aig-stages-") as tmp:
        work = Path(tmp)
        stack = start_stack(work / "aig", SANDBOX_ENV)
        try:
            key = create_api_key(stack)
            edges = [start_stage_edge(stack, tree, work, key) for tree in trees]
            pids = {f"stages-{edge.tree.label}": edge.pid for edge in edges}
            ProcessGroup({**gateway_processes(stack).roots, **pids}).pin(TARGET_CPUS)
            sandbox_process(stack).pin(DRIVER_CPUS)
            infra_processes(stack).pin(DRIVER_CPUS)
            os.sched_setaffinity(0, DRIVER_CPUS)
            direct = chat_requests(f"{stack.sandbox_url}/openai/v1/chat/completions", "sandbox-key")
            for edge in edges:  # warm-up
                run_oha(edge.request, seconds=4, connections=16, rate=50, cpus=DRIVER_CPUS)
            for edge in edges:
                spent = functools.partial(cpu_seconds, edge.pid)
                wait_until_quiet(spent, window_s=1.0, quiet_s=0.01, limit_s=30.0)
            for rate in rates:
                for edge in edges:
                    edge.medians()  # counting starts here
                overheads: dict[str, list[float]] = {edge.tree.label: [] for edge in edges}
                for round_ in range(rounds):
                    base = _p50(direct[0], rate, seconds)
                    # Each round turns the order around: the first measured is not favoured.
                    turn = edges if round_ % 2 == 0 else edges[::-1]
                    for edge in turn:
                        overheads[edge.tree.label].append(_p50(edge.request, rate, seconds) - base)
                for edge in edges:
                    results[edge.tree.label][rate] = {
                        **edge.medians(),
                        "p50_overhead_ms": statistics.median(overheads[edge.tree.label]),
                    }
        finally:
            stack.stop()
    return results


def _p50(request: Request, rate: int, seconds: float) -> float:
    result = run_oha(request, seconds=seconds, connections=CONNECTIONS, rate=rate, cpus=DRIVER_CPUS)
    return result.p50_ms


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A detached git worktree of `revision`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="aig-stages-tree-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                check=False,
                capture_output=True,
            )


def _cell(result: dict[str, Any], stage: str) -> float:
    if stage == "p50 overhead":
        return float(result["p50_overhead_ms"]) * 1000
    value = result["stages_us"].get(stage)
    return float("nan") if value is None else float(value)


ROWS: dict[str, str] = {**STAGES, "p50 overhead": "oha's p50 overhead over direct"}


def table(results: dict[int, dict[str, Any]]) -> str:
    rates = sorted(results)
    lines = [
        "| stage | what it is | " + " | ".join(f"{rate}/s, µs" for rate in rates) + " |",
        "|---|---|" + "---|" * len(rates),
    ]
    for stage, meaning in ROWS.items():
        cells = [f"{_cell(results[rate], stage):.0f}" for rate in rates]
        lines.append(f"| {stage} | {meaning} | " + " | ".join(cells) + " |")
    calls = ", ".join(f"{results[rate]['calls']} at {rate}/s" for rate in rates)
    lines += ["", f"Medians per call over {calls}."]
    return "\n".join(lines)


def ab_table(
    orders: list[dict[str, dict[int, dict[str, Any]]]], this: str, other: str, revision: str
) -> str:
    """Per stage and rate: each tree's figure in both start orders and the difference of
    their means (this minus other; negative: this tree is faster)."""
    rates = sorted(orders[0][this])
    header = ["stage"]
    for rate in rates:
        header += [f"{rate}/s {this}", f"{rate}/s {other}", f"{rate}/s difference"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for stage in ROWS:
        cells = [stage]
        for rate in rates:
            ours = [_cell(order[this][rate], stage) for order in orders]
            theirs = [_cell(order[other][rate], stage) for order in orders]
            cells.append(" / ".join(f"{value:.0f}" for value in ours))
            cells.append(" / ".join(f"{value:.0f}" for value in theirs))
            cells.append(f"{statistics.fmean(ours) - statistics.fmean(theirs):+.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"µs, medians per call; `{this}`: this work tree, `{other}`: {revision}. Each cell:"
        f" {this} started first / {other} started first.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,200", help="calls/s, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--against", metavar="REV", help="compare with git revision REV")
    args = parser.parse_args()
    ensure_installed()
    rates = [int(rate) for rate in args.rates.split(",")]
    if args.against is None:
        this = Tree("this")
        print(table(measure([this], rates, args.rounds, args.seconds)["this"]), flush=True)
        return
    with worktree(args.against) as path:
        this, other = Tree("this"), Tree("against", path)
        orders = [
            measure([this, other], rates, args.rounds, args.seconds),
            measure([other, this], rates, args.rounds, args.seconds),
        ]
    print(ab_table(orders, this.label, other.label, args.against), flush=True)


if __name__ == "__main__":
    main()
