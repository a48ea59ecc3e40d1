"""Two-core scale-out: each gateway gets both cores, against its one-core figure of the same
run.

aig: two edge processes sharing one port (SO_REUSEPORT, `AIG_EDGE_REUSE_PORT`), each
round-robining over two routers, plus one billing, jobs and webhooks as ever, on a fresh
stack of its own, unpinned. LiteLLM: `--num_workers 2`, unpinned. The load generator, the
upstream and Kafka share the same two cores: on a two-core machine there is no third. The
upstream here is `bench/upstream` (Go, bench/compiled_upstream.py), not the sandbox: the
sandbox's CPU took about 0.4 of the two cores at aig's peak, which a real provider does not
take from a gateway's machine; this one answers the same calls for about a quarter of it.
Peak RPS comes from the same closed-loop search as the one-core phase, with billing's
settlement lag scraped around each of aig's steps and its settling capacity measured after.
The two-core ratio judged is not the two searches' peaks divided: the one-core search runs
about ten minutes earlier, and this guest's speed drifts by more than the bound in that time.
Each gateway's two peak steps are taken again side by side (`side_by_side`), and the ratio
is the median of those rounds'.

Part of the default run (`python -m bench`, after the soak); `python -m bench.scaleout`
runs it alone, with the one-core peaks it is compared to measured just before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import aig_target, compiled_upstream
from .install import ensure_installed
from .litellm_target import LiteLLMProxy
from .loadgen import LoadResult, run_oha
from .plan import DEFAULT, ERROR_BUDGET, QUICK, SANDBOX_ENV, Plan
from .procs import cpu_seconds
from .run import (
    DRIVER_CPUS,
    Environment,
    StepCpu,
    Target,
    chat_requests,
    environment,
    log,
    measure_drain,
    measure_peak,
    peak_step,
    peak_step_cpu,
    pin_cpus,
    settlement_summary,
)

EDGES = 2
ROUTERS = 2
LITELLM_WORKERS = 2
IN_PROCESS = "aig-inproc"


@contextlib.contextmanager
def all_cores() -> Iterator[set[int]]:
    """The harness runs pinned to the driver's core and its children inherit that mask:
    processes started for this phase get every core, and the mask comes back after."""
    before = os.sched_getaffinity(0)
    every = set(range(os.cpu_count() or 1))
    os.sched_setaffinity(0, every)
    try:
        yield every
    finally:
        os.sched_setaffinity(0, before)


def scale_out(
    plan: Plan, env: Environment, one_core: list[Target], *, work_dir: Path
) -> dict[str, Any]:
    by_name = {target.name: target for target in one_core}
    with all_cores() as cores:
        log(f"two-core phase: aig with {EDGES} edges (SO_REUSEPORT) and {ROUTERS} routers")
        stack = aig_target.start_stack(
            work_dir / "aig", SANDBOX_ENV, edges=EDGES, routers=ROUTERS, with_sandbox=False
        )
        litellm: LiteLLMProxy | None = None
        upstream: compiled_upstream.CompiledUpstream | None = None
        try:
            upstream = compiled_upstream.start(stack.ports.sandbox, SANDBOX_ENV)
            aig = Target(
                "aig",
                f"aig, {EDGES} edges + {ROUTERS} routers on both cores",
                *chat_requests(
                    f"{stack.edge_url}/v1/chat/completions", aig_target.create_api_key(stack)
                ),
                gateway=aig_target.gateway_processes(stack),
                infra=aig_target.infra_processes(stack),
                billing=aig_target.billing(stack),
            )
            targets = [aig]
            if IN_PROCESS in by_name:
                log(f"two-core phase: aig with {EDGES} edges running their routers in-process")
                in_process_url = aig_target.start_in_process_edges(stack, EDGES)
                targets.append(
                    Target(
                        IN_PROCESS,
                        f"aig, {EDGES} edges with the router in their process, on both cores",
                        *chat_requests(
                            f"{in_process_url}/v1/chat/completions",
                            aig_target.create_api_key(stack),
                        ),
                        gateway=aig_target.gateway_processes(stack, in_process_router=True),
                        infra=aig_target.infra_processes(stack),
                    )
                )
            if "litellm" in by_name:
                log(f"two-core phase: LiteLLM with --num_workers {LITELLM_WORKERS}")
                litellm = LiteLLMProxy(
                    f"{stack.sandbox_url}/openai/v1",
                    work_dir / "litellm",
                    workers=LITELLM_WORKERS,
                )
                try:
                    litellm.start()
                    targets.append(
                        Target(
                            "litellm",
                            f"LiteLLM, --num_workers {LITELLM_WORKERS}, no database",
                            *chat_requests(
                                f"{litellm.url}/v1/chat/completions", litellm.master_key
                            ),
                            gateway=litellm.processes(),
                        )
                    )
                except RuntimeError as exc:
                    log(f"LiteLLM with {LITELLM_WORKERS} workers did not start: {exc}")
                    litellm = None
            for target in targets:
                target.gateway.pin(cores)
                if target.infra:
                    target.infra.pin(cores)
            os.sched_setaffinity(upstream.pid, cores)
            log("warming up: " + ", ".join(f"{t.name} ({t.label})" for t in targets))
            for target in targets:
                # First connections, the key cache, every LiteLLM worker's first calls.
                run_oha(target.request, seconds=2, connections=8, cpus=cores)
            upstream_before = cpu_seconds(upstream.pid)
            measure_peak(plan, targets, cores)
            upstream_cpu_s = cpu_seconds(upstream.pid) - upstream_before
            measure_drain(plan, aig, cores)
            pairs = [(by_name[t.name], t) for t in targets if t.name in by_name]
            load = oha_steps(plan.peak_seconds)
            rounds = side_by_side(plan.scaleout_rounds, pairs, cores, load)
            two_core = {target.name: target for target in targets}
            out = summarise(by_name, two_core, len(cores), rounds)
            calls = sum(step.ok for target in targets for step in target.peak_steps)
            out["upstream"] = {
                "name": "bench/upstream (Go)",
                "cpu_ms_per_call": upstream_cpu_s / calls * 1000 if calls else None,
            }
            return out
        finally:
            if litellm is not None:
                with contextlib.suppress(Exception):
                    litellm.stop()
            if upstream is not None:
                upstream.stop()
            stack.stop()


# One closed-loop step: a target at so many connections, oha on these cores.
StepLoad = Callable[[Target, int, set[int]], LoadResult]


def oha_steps(seconds: float) -> StepLoad:
    def step(target: Target, connections: int, cpus: set[int]) -> LoadResult:
        return run_oha(target.request, seconds=seconds, connections=connections, cpus=cpus)

    return step


def side_by_side(
    rounds: int, pairs: list[tuple[Target, Target]], cores: set[int], load: StepLoad
) -> dict[str, list[dict[str, Any]]]:
    """Each gateway's one-core peak step and two-core peak step, taken again one right after
    the other, `rounds` times: the two-core ratio with the machine's speed at one moment
    on both sides of it.

    The searches the peaks come from run about ten minutes apart, and over minutes this
    guest's speed drifts: in the default run of 2026-12-08 02:49 LiteLLM, whose code did not
    change between them, spent 16.9 CPU-ms a call in the one-core search and 7.2 in the
    two-core one, and aig's ratio read 3.75x. Each `pairs` entry is a gateway's one-core
    target (pinned, its load from the driver's core, as in its search) and its two-core
    target (unpinned); each step runs at the connections of that target's peak step.
    Within a round a gateway's two steps run back to back, one-core first in rounds 1, 3,
    ... and two-core first in rounds 2, 4, ..., so a steady drift falls on both orders
    alike. `load` runs one step (`oha_steps` in the bench)."""
    charged = _charged(load)
    runs = []
    for one, two in pairs:
        one_peak, two_peak = peak_step(one), peak_step(two)
        if one_peak is not None and two_peak is not None:
            runs.append((one, one_peak.connections, two, two_peak.connections))
    out: dict[str, list[dict[str, Any]]] = {one.name: [] for one, *_ in runs}
    for index in range(rounds):
        for one, one_connections, two, two_connections in runs:
            if index % 2 == 0:
                one_step, one_cpu_s = charged(one, one_connections, DRIVER_CPUS)
                two_step, two_cpu_s = charged(two, two_connections, cores)
            else:
                two_step, two_cpu_s = charged(two, two_connections, cores)
                one_step, one_cpu_s = charged(one, one_connections, DRIVER_CPUS)
            judged = max(one_step.error_ratio, two_step.error_ratio) < ERROR_BUDGET
            ratio = two_step.rps / one_step.rps if judged and one_step.rps else None
            out[one.name].append(
                {
                    "one_core_rps": one_step.rps,
                    "two_core_rps": two_step.rps,
                    "one_core_error_ratio": one_step.error_ratio,
                    "two_core_error_ratio": two_step.error_ratio,
                    "two_over_one": ratio,
                    # The gateway's CPU a call in each step: why the ratio is what it is,
                    # at one moment's machine speed.
                    "one_core_cpu_ms_per_call": _per_call_ms(one_cpu_s, one_step),
                    "two_core_cpu_ms_per_call": _per_call_ms(two_cpu_s, two_step),
                }
            )
            log(
                f"side by side  {one.name:<11} round {index + 1}  one core "
                f"{one_step.rps:8.1f} rps (c={one_connections})  two cores "
                f"{two_step.rps:8.1f} rps (c={two_connections})  two / one "
                + (f"{ratio:.2f}x" if ratio is not None else "not judged (errors)")
            )
    return out


def _charged(load: StepLoad) -> Callable[[Target, int, set[int]], tuple[LoadResult, float]]:
    """`load`, with the CPU seconds the target's own processes spent in the step (not
    charged to the target's totals: those are its searches')."""

    def step(target: Target, connections: int, cpus: set[int]) -> tuple[LoadResult, float]:
        before = target.gateway.cpu_seconds()
        result = load(target, connections, cpus)
        return result, target.gateway.cpu_seconds() - before

    return step


def _per_call_ms(cpu_s: float, step: LoadResult) -> float | None:
    return cpu_s / step.ok * 1000 if step.ok else None


def side_by_side_ratio(rounds: list[dict[str, Any]]) -> float | None:
    """The median of the rounds' two-core ratios; rounds with a step over the error budget
    say nothing."""
    ratios = [r["two_over_one"] for r in rounds if r["two_over_one"] is not None]
    return statistics.median(ratios) if ratios else None


def _rps(target: Target | None) -> float | None:
    step = peak_step(target) if target is not None else None
    return step.rps if step is not None else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def _cpu_ms_per_call(peak: tuple[LoadResult, StepCpu] | None) -> float | None:
    """A target's own CPU per call in its peak step."""
    if peak is None or not peak[0].ok:
        return None
    step, cpu = peak
    return cpu.gateway_s / step.ok * 1000


def _gateway(
    one: Target | None, two: Target, cores: int, rounds: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    one_rps, two_rps = _rps(one), _rps(two)
    two_peak = peak_step_cpu(two)
    step, cpu = two_peak if two_peak is not None else (None, None)
    two_cpu_ms = _cpu_ms_per_call(two_peak)
    return {
        "one_core_rps": one_rps,
        "two_core_rps": two_rps,
        # The two searches' peaks divided, minutes apart: shown, not judged.
        "two_over_one": _ratio(two_rps, one_rps),
        # The judged ratio: both peak steps taken again side by side (`side_by_side`).
        "side_by_side": rounds or [],
        "two_over_one_side_by_side": side_by_side_ratio(rounds) if rounds else None,
        "one_core_still_rising": one.still_rising if one is not None else None,
        "two_core_still_rising": two.still_rising,
        "processes": sorted(two.gateway.roots),
        "steps": [vars(step) for step in two.peak_steps],
        "cpu_ms_per_call": two.cpu_s / two.calls * 1000 if two.calls else None,
        # Why two cores give what they give, from the two-core peak step: how many of the
        # cores the gateway's processes kept busy and how many the whole machine did (the
        # rest of it: oha, the sandbox, Kafka, the harness), and the gateway's CPU per call
        # there and at its one-core peak.
        "peak_gateway_cores": cpu.gateway_s / step.seconds if step and cpu else None,
        "peak_machine_cores": cpu.machine_busy_s / step.seconds if step and cpu else None,
        "one_core_peak_cpu_ms_per_call": _cpu_ms_per_call(
            peak_step_cpu(one) if one is not None else None
        ),
        "two_core_peak_cpu_ms_per_call": two_cpu_ms,
        # What the two-core peak would be with both cores the gateway's alone, at the CPU
        # per call it spent on two cores: an estimate, over the one-core peak.
        "cores_to_itself_over_one": _ratio(cores * 1000 / two_cpu_ms, one_rps)
        if two_cpu_ms
        else None,
    }


def summarise(
    one: dict[str, Target],
    two: dict[str, Target],
    cores: int,
    rounds: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    rounds = rounds or {}
    litellm_one, litellm_two = _rps(one.get("litellm")), _rps(two.get("litellm"))
    aig = _gateway(one.get("aig"), two["aig"], cores, rounds.get("aig"))
    out: dict[str, Any] = {
        "edges": EDGES,
        "routers": ROUTERS,
        "litellm_workers": LITELLM_WORKERS,
        "aig": {**aig, **settlement_summary(two["aig"], peak_step(two["aig"]))},
        "litellm": None,
        "aig_two_over_litellm_two": _ratio(aig["two_core_rps"], litellm_two),
        # The same edges with their routers in-process (AIG_EDGE_IN_PROCESS_ROUTER), against
        # the one-core figure of the same configuration.
        "aig_inproc": None,
        "aig_inproc_two_over_litellm_two": None,
    }
    if IN_PROCESS in two:
        out["aig_inproc"] = _gateway(
            one.get(IN_PROCESS), two[IN_PROCESS], cores, rounds.get(IN_PROCESS)
        )
        out["aig_inproc_two_over_litellm_two"] = _ratio(
            out["aig_inproc"]["two_core_rps"], litellm_two
        )
    if "litellm" in two:
        out["litellm"] = {
            "one_worker_rps": litellm_one,
            "two_workers_rps": litellm_two,
            "two_over_one": _ratio(litellm_two, litellm_one),
            # Two independent workers gain at most 2x: a control on the side-by-side rounds.
            "side_by_side": rounds.get("litellm", []),
            "two_over_one_side_by_side": side_by_side_ratio(rounds["litellm"])
            if rounds.get("litellm")
            else None,
            "steps": [vars(step) for step in two["litellm"].peak_steps],
            "cpu_ms_per_call": two["litellm"].cpu_s / two["litellm"].calls * 1000
            if two["litellm"].calls
            else None,
        }
    for name, figures in (
        ("aig", out["aig"]),
        (IN_PROCESS, out["aig_inproc"]),
        ("litellm", out["litellm"]),
    ):
        if figures:
            brief = {k: v for k, v in figures.items() if k not in ("steps", "settlement")}
            log(f"scale-out {name}: {json.dumps(brief)}")
    return out


def main() -> None:
    """The one-core peaks of aig and LiteLLM (pinned as the default run pins them), then the
    two-core phase; figures to out/scaleout.json. Quick plan lengths, but the default's
    side-by-side rounds: the ratio they judge is what this command is for."""
    ensure_installed()
    plan = dataclasses.replace(QUICK, scaleout_rounds=DEFAULT.scaleout_rounds)
    out_dir = Path(__file__).parent / "out"
    out_dir.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="aig-bench-scaleout-") as tmp,
        environment(plan, Path(tmp)) as env,
    ):
        from .run import build_targets

        targets = [t for t in build_targets(env) if t.name in ("aig", IN_PROCESS, "litellm")]
        pin_cpus(env, targets)
        for target in targets:
            run_oha(target.request, seconds=2, connections=8, cpus=DRIVER_CPUS)  # warm-up
        measure_peak(plan, targets, DRIVER_CPUS)
        aig = next(t for t in targets if t.name == "aig")
        measure_drain(plan, aig, DRIVER_CPUS)
        one_core = {
            "aig": settlement_summary(aig, peak_step(aig)),
        }
        result = scale_out(plan, env, targets, work_dir=Path(tmp) / "two-core")
        result["one_core"] = one_core
    path = out_dir / "scaleout.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
