"""One benchmark run: start every target, measure them in alternation, collect the figures."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.stack import Stack

from . import aig_target, billing_throughput, profiling, settlement
from .litellm_target import MODEL, LiteLLMProxy, litellm_version, prisma_ready
from .loadgen import LoadResult, OhaRun, Request, combined, run_oha
from .plan import ERROR_BUDGET, SANDBOX_ENV, Plan
from .procs import ProcessGroup, machine_busy_seconds, wait_until_quiet
from .soak import sample_rss
from .streaming import StreamResult, measure_streaming

# Gateways get one core; the load generator, the sandbox, the gateways' broker/database and
# this harness share the other, so every gateway has the same CPU budget: one core.
TARGET_CPUS = {1}
DRIVER_CPUS = {0}
CALL_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Write a short greeting."}]}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class StepCpu:
    """CPU seconds over one load step: the target's own processes, and every busy core of
    the machine (the target, oha, the sandbox, infrastructure, anything else)."""

    gateway_s: float
    machine_busy_s: float


@dataclass
class Target:
    name: str
    label: str
    request: Request
    stream_request: Request
    gateway: ProcessGroup
    infra: ProcessGroup | None = None
    cpu_s: float = 0.0
    infra_cpu_s: float = 0.0
    calls: int = 0
    peak_steps: list[LoadResult] = field(default_factory=list)
    # Per peak step, beside peak_steps: the CPU seconds the target's processes spent and the
    # CPU seconds the whole machine was busy (StepCpu).
    peak_cpu: list[StepCpu] = field(default_factory=list)
    rates: dict[int, LoadResult] = field(default_factory=dict)  # the rounds combined
    rate_rounds: dict[int, list[LoadResult]] = field(default_factory=dict)
    stream: StreamResult | None = None
    stream_round_ttft_p50: list[float] = field(default_factory=list)  # one per turn
    # aig only: billing's figures, read around each peak step for the settlement lag.
    billing: settlement.Billing | None = None
    settlement: dict[int, dict[str, Any]] = field(default_factory=dict)
    drain: dict[str, Any] | None = None
    last_cpu: StepCpu | None = None  # set by measured()
    # The peak search ran out of steps while this target still gained (its peak is a floor).
    still_rising: bool = False

    def measured(self, load: Callable[[], LoadResult]) -> LoadResult:
        """Runs `load` and charges the CPU the target's processes spent meanwhile to it."""
        before = self.gateway.cpu_seconds()
        infra_before = self.infra.cpu_seconds() if self.infra else 0.0
        busy_before = machine_busy_seconds()
        result = load()
        spent = self.gateway.cpu_seconds() - before
        self.last_cpu = StepCpu(spent, machine_busy_seconds() - busy_before)
        self.cpu_s += spent
        if self.infra:
            self.infra_cpu_s += self.infra.cpu_seconds() - infra_before
        self.calls += result.ok
        return result


def chat_requests(url: str, api_key: str) -> tuple[Request, Request]:
    """The bench's chat call to `url`, plain and streamed."""
    plain = json.dumps(CALL_BODY).encode()
    streamed = json.dumps({**CALL_BODY, "stream": True}).encode()
    return Request(url, api_key, plain), Request(url, api_key, streamed)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@dataclass
class Environment:
    """Everything started for a run; `close()` stops it in reverse order."""

    work_dir: Path
    stack: Stack
    aig_key: str
    # The edge with the router in its process (Plan.in_process_router), when started.
    in_process_url: str | None = None
    litellm: LiteLLMProxy | None = None
    litellm_db: LiteLLMProxy | None = None
    postgres: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for proxy in (self.litellm_db, self.litellm):
            if proxy is not None:
                with contextlib.suppress(Exception):
                    proxy.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        self.stack.stop()


@contextlib.contextmanager
def environment(plan: Plan, work_dir: Path) -> Iterator[Environment]:
    log("starting aig's whole stack as devstack.Stack does")
    stack = aig_target.start_stack(work_dir / "aig", SANDBOX_ENV)
    env = Environment(work_dir=work_dir, stack=stack, aig_key=aig_target.create_api_key(stack))
    try:
        if plan.in_process_router:
            log("starting an edge with the router in its process beside it")
            env.in_process_url = aig_target.start_in_process_edges(stack)
        if plan.compare_litellm:
            _start_litellm(env)
        yield env
    finally:
        log("stopping every target")
        env.close()


def _start_litellm(env: Environment) -> None:
    upstream = f"{env.stack.sandbox_url}/openai/v1"
    log("starting LiteLLM proxy without a database")
    env.litellm = LiteLLMProxy(upstream, env.work_dir / "litellm")
    try:
        env.litellm.start()
    except RuntimeError as exc:
        env.unavailable["litellm"] = str(exc).splitlines()[0]
        env.litellm = None
    log("checking that LiteLLM's Prisma client can be generated (needed for its database)")
    reason = prisma_ready()
    if reason is not None:
        env.unavailable["litellm-db"] = reason
        log(f"LiteLLM with PostgreSQL is skipped: {reason}")
        return
    from tests.pg import PostgresServer  # the project's throwaway PostgreSQL

    env.postgres = PostgresServer.start()
    env.postgres.create_database("litellm")
    database_url = f"postgresql://postgres@127.0.0.1:{env.postgres.port}/litellm"
    log("starting LiteLLM proxy with PostgreSQL (virtual keys, budgets)")
    env.litellm_db = LiteLLMProxy(upstream, env.work_dir / "litellm-db", database_url=database_url)
    try:
        env.litellm_db.start(timeout_s=300)
    except RuntimeError as exc:
        env.unavailable["litellm-db"] = str(exc).splitlines()[0]
        env.litellm_db = None


def postgres_processes(server: Any) -> ProcessGroup:
    postmaster = int((Path(server.data_dir) / "postmaster.pid").read_text().split()[0])
    return ProcessGroup({"postgres": postmaster})


def build_targets(env: Environment) -> list[Target]:
    stack = env.stack
    sandbox_url = f"{stack.sandbox_url}/openai/v1/chat/completions"
    targets = [
        Target(
            "direct",
            "direct (oha → sandbox)",
            *chat_requests(sandbox_url, "sandbox-key"),
            gateway=aig_target.sandbox_process(stack),
        ),
        Target(
            "aig",
            "aig (the whole stack: edge → router → sandbox)",
            *chat_requests(f"{stack.edge_url}/v1/chat/completions", env.aig_key),
            gateway=aig_target.gateway_processes(stack),
            infra=aig_target.infra_processes(stack),
            billing=aig_target.billing(stack),
        ),
    ]
    if env.in_process_url is not None:
        targets.append(
            Target(
                "aig-inproc",
                "aig, the router in the edge's process (AIG_EDGE_IN_PROCESS_ROUTER)",
                *chat_requests(f"{env.in_process_url}/v1/chat/completions", env.aig_key),
                gateway=aig_target.gateway_processes(stack, in_process_router=True),
                infra=aig_target.infra_processes(stack),
            )
        )
    if env.litellm is not None:
        targets.append(
            Target(
                "litellm",
                "LiteLLM proxy, no database",
                *chat_requests(f"{env.litellm.url}/v1/chat/completions", env.litellm.master_key),
                gateway=env.litellm.processes(),
            )
        )
    if env.litellm_db is not None:
        targets.append(
            Target(
                "litellm-db",
                "LiteLLM proxy + PostgreSQL (virtual key with budget)",
                *chat_requests(
                    f"{env.litellm_db.url}/v1/chat/completions", env.litellm_db.create_virtual_key()
                ),
                gateway=env.litellm_db.processes(),
                infra=postgres_processes(env.postgres),
            )
        )
    return targets


def pin_cpus(env: Environment, targets: list[Target]) -> None:
    for target in targets:
        target.gateway.pin(DRIVER_CPUS if target.name == "direct" else TARGET_CPUS)
        # A broker or database keeps working between phases (Kafka's JVM, LiteLLM's batched
        # spend writes): on the gateways' core it would slow whichever target runs next.
        if target.infra:
            target.infra.pin(DRIVER_CPUS)
    os.sched_setaffinity(0, DRIVER_CPUS)


def measure_peak(plan: Plan, targets: list[Target], cpus: set[int] | None) -> None:
    """Closed loop with rising connections; a target drops out once it stops gaining or fails."""
    rising = list(targets)
    for connections in plan.peak_connections:
        for target in list(rising):
            load = functools.partial(
                target.measured,
                functools.partial(
                    run_oha,
                    target.request,
                    seconds=plan.peak_seconds,
                    connections=connections,
                    cpus=cpus,
                ),
            )
            lag = ""
            if target.billing is not None:
                # Billing's catch-up after the step is waited for outside `measured`, as
                # before: between steps, not charged to the target's CPU per call.
                result, settled = settlement.measured_step(target.billing, load, _ok)
                target.settlement[connections] = settled
                lag = f"  settlement p99 {_seconds(settled['lag_p99_s'])}"
            else:
                result = load()
            target.peak_steps.append(result)
            assert target.last_cpu is not None  # the step ran through target.measured
            target.peak_cpu.append(target.last_cpu)
            log(
                f"peak  {target.name:<11} c={connections:<4} {result.rps:8.1f} rps  "
                f"p50 {result.p50_ms:7.1f} ms  errors {result.error_ratio:.2%}{lag}"
            )
            if not keeps_searching(target.peak_steps):
                rising.remove(target)
    for target in rising:
        # Still gaining at the plan's last step: its peak is a floor. A target whose last
        # step did not gain (but the one before did) is in the search, not rising.
        # A plan with no peak steps (the soak) searched nothing: nothing is rising.
        steps = target.peak_steps
        target.still_rising = bool(steps) and _gained(steps, len(steps) - 1)


def keeps_searching(steps: list[LoadResult]) -> bool:
    """Whether the peak search tries a target's next step, given its steps so far: not
    once a step went over the error budget, nor once two steps in a row gained less than
    5 % on the best step before each. One step that does not gain is not enough: in the
    default run of 2026-12-06 15:00 both aig configurations fell at 256 connections
    (2,215 -> 1,863 and 2,390 -> 2,209 calls/s) where every other run today gained there,
    and the search stopped at 128, below the one-core peak that the two-core ratio
    divides by."""
    if steps[-1].error_ratio >= ERROR_BUDGET:
        return False
    last = len(steps) - 1
    return _gained(steps, last) or (last >= 1 and _gained(steps, last - 1))


def _gained(steps: list[LoadResult], index: int) -> bool:
    """Whether step `index` gained 5 % or more on the best step before it (under 0.1 %
    errors)."""
    best = max(
        (s.rps for s in steps[:index] if s.error_ratio < ERROR_BUDGET),
        default=0.0,
    )
    return steps[index].rps >= best * 1.05


def _ok(result: LoadResult) -> int:
    return result.ok


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def peak_step(target: Target) -> LoadResult | None:
    ok_steps = [s for s in target.peak_steps if s.error_ratio < ERROR_BUDGET]
    return max(ok_steps, key=lambda s: s.rps, default=None)


def peak_step_cpu(target: Target) -> tuple[LoadResult, StepCpu] | None:
    """The step peak_step() picks, with the CPU spent in it (None if either is missing)."""
    step = peak_step(target)
    if step is None or len(target.peak_cpu) != len(target.peak_steps):
        return None
    return step, target.peak_cpu[target.peak_steps.index(step)]


def measure_drain(plan: Plan, target: Target, cpus: set[int] | None) -> None:
    """Billing's settling capacity on this stack: a backlog of `drain_seconds` of closed-loop
    load at the peak's connections, settled with nothing else running."""
    peak = peak_step(target)
    if not plan.drain_seconds or target.billing is None or peak is None:
        return
    billing = [
        pid
        for name, pids in target.gateway.pids().items()
        if name.startswith("billing")
        for pid in pids
    ]
    target.drain = settlement.drain_rate(
        target.billing,
        billing,
        functools.partial(
            run_oha,
            target.request,
            seconds=plan.drain_seconds,
            connections=peak.connections,
            cpus=cpus,
        ),
        _ok,
    )
    drain = target.drain
    log(
        f"drain {target.name:<11} {drain['settled']:.0f} of {drain['backlog']} events settled "
        f"in {drain['seconds']:.2f} s: {drain['events_per_s'] or 0:.0f} events/s, "
        f"{drain['steady_events_per_s'] or 0:.0f}/s after the first batch "
        f"(peak {peak.rps:.0f} calls/s)"
    )


def measure_rates(plan: Plan, targets: list[Target], cpus: set[int] | None) -> None:
    """Each rate: every target in turn, `latency_rounds` times over (Plan)."""
    for rate in plan.rates:
        for round_number in range(1, plan.latency_rounds + 1):
            for target in targets:
                result = target.measured(
                    functools.partial(
                        run_oha,
                        target.request,
                        seconds=plan.rate_seconds,
                        connections=plan.rate_connections,
                        rate=rate,
                        cpus=cpus,
                    )
                )
                target.rate_rounds.setdefault(rate, []).append(result)
                log(
                    f"rate  {target.name:<11} {rate:>4}/s  round {round_number}  "
                    f"got {result.rps:7.1f}/s  p50 {result.p50_ms:7.1f}  "
                    f"p90 {result.p90_ms:7.1f}  p99 {result.p99_ms:7.1f} ms  "
                    f"errors {result.error_ratio:.2%}"
                )
                if result.rps < 0.9 * rate:
                    wait_until_idle(target)
        for target in targets:
            target.rates[rate] = combined(target.rate_rounds[rate])


def wait_until_idle(target: Target) -> None:
    """Waits for a saturated target to finish the calls oha left queued in it at its deadline
    (LiteLLM's take seconds), so they do not run beside the next target's measurement: until
    its processes use under 5 % of a core over half a second, for at most 20 s."""
    wait_until_quiet(target.gateway.cpu_seconds, window_s=0.5, quiet_s=0.025, limit_s=20.0)


def measure_streams(plan: Plan, targets: list[Target]) -> None:
    """`stream_calls` a target, in `stream_rounds` turns taken in alternation (Plan)."""
    per_round = max(1, plan.stream_calls // plan.stream_rounds)
    for _ in range(plan.stream_rounds):
        for target in targets:
            calls = measure_streaming(
                target.stream_request, count=per_round, concurrency=plan.stream_concurrency
            )
            target.stream_round_ttft_p50.append(percentile(calls.ttft_ms, 0.5))
            if target.stream is None:
                target.stream = calls
            else:
                target.stream.extend(calls)
    for target in targets:
        assert target.stream is not None
        log(
            f"stream {target.name:<11} ttft p50 {percentile(target.stream.ttft_ms, 0.5):7.1f} ms  "
            f"gap p50 {percentile(target.stream.gap_ms, 0.5):6.2f} ms  "
            f"total p50 {percentile(target.stream.total_ms, 0.5):7.1f} ms  "
            f"errors {target.stream.errors}"
        )


def profile_aig(plan: Plan, aig: Target, out_dir: Path, cpus: set[int] | None) -> dict[str, Any]:
    """Flame graphs of aig's services while oha offers `profile_rate` calls per second.

    py-spy runs twice in a row per process, once for the SVG and once for the collapsed stacks
    the hot-function table is computed from: two samplers on one process at once can panic.
    """
    log(f"profiling {', '.join(aig.gateway.roots)} with py-spy, 2 x {plan.profile_seconds:.0f} s")
    report: dict[str, Any] = {
        name: {"flamegraph": None, "hot": [], "errors": [], "mode": "nonblocking"}
        for name in aig.gateway.roots
    }
    jobs = [(name, fmt) for fmt in ("flamegraph", "raw") for name in aig.gateway.roots]
    failed = _profile_round(plan, aig, out_dir, cpus, jobs, nonblocking=True, report=report)
    if failed:
        log(f"py-spy failed on {sorted(set(name for name, _ in failed))}; retrying in pausing mode")
        for name, _ in failed:
            report[name]["mode"] = "blocking (nonblocking failed)"
        _profile_round(plan, aig, out_dir, cpus, failed, nonblocking=False, report=report)
    for name in aig.gateway.roots:
        svg, raw = _profile_path(out_dir, name, "flamegraph"), _profile_path(out_dir, name, "raw")
        report[name]["flamegraph"] = svg.name if svg.exists() else None
        if raw.exists():
            report[name]["hot"] = [asdict(hot) for hot in profiling.hot_functions(raw)]
    return report


def _profile_round(
    plan: Plan,
    aig: Target,
    out_dir: Path,
    cpus: set[int] | None,
    jobs: list[tuple[str, str]],
    *,
    nonblocking: bool,
    report: dict[str, Any],
) -> list[tuple[str, str]]:
    """Runs the (service, format) jobs, one format at a time, under load; returns failures."""
    formats = sorted({fmt for _, fmt in jobs})
    load = OhaRun(
        aig.request,
        seconds=len(formats) * (plan.profile_seconds + 1) + 2,
        connections=plan.rate_connections,
        rate=plan.profile_rate,
        cpus=cpus,
    )
    time.sleep(1)  # let connections open before sampling starts
    failed: list[tuple[str, str]] = []
    for fmt in formats:
        spies = {
            name: profiling.start_py_spy(
                aig.gateway.roots[name],
                _profile_path(out_dir, name, fmt),
                plan.profile_seconds,
                fmt,
                nonblocking=nonblocking,
                # The table is about CPU: only the GIL holder; the SVG shows every busy thread.
                gil=fmt == "raw",
            )
            for name, job_fmt in jobs
            if job_fmt == fmt
        }
        for name, spy in spies.items():
            _, stderr = spy.communicate(timeout=plan.profile_seconds + 60)
            if spy.returncode != 0:
                failed.append((name, fmt))
                _profile_path(out_dir, name, fmt).unlink(missing_ok=True)
                report[name]["errors"].append(stderr.decode(errors="replace").strip()[:300])
    report["load"] = asdict(load.result())
    return failed


def _profile_path(out_dir: Path, name: str, fmt: str) -> Path:
    return out_dir / f"profile-{name}.{'svg' if fmt == 'flamegraph' else 'txt'}"


def sustainable_rate(plan: Plan, aig: Target, cpus: set[int] | None) -> float:
    """Half of aig's best closed-loop rate, so the soak measures memory, not a growing queue."""
    steps = [s.rps for s in aig.peak_steps if s.error_ratio < ERROR_BUDGET]
    if not steps:
        steps = [run_oha(aig.request, seconds=3, connections=16, cpus=cpus).rps]
    return max(1.0, min(float(plan.soak_rate), round(max(steps) / 2)))


def soak_aig(plan: Plan, aig: Target, cpus: set[int] | None) -> dict[str, Any]:
    rate = sustainable_rate(plan, aig, cpus)
    log(f"RSS soak of {aig.name}: {plan.soak_seconds:.0f} s at {rate:.0f} calls/s")
    load = OhaRun(
        aig.request,
        seconds=plan.soak_seconds + 1,
        connections=plan.rate_connections,
        rate=rate,
        cpus=cpus,
    )
    series = sample_rss(aig.gateway, plan.soak_seconds, plan.soak_interval_s)
    result = load.result()
    mib = 1024 * 1024
    return {
        "seconds": plan.soak_seconds,
        "rate": rate,
        "load": asdict(result),
        "processes": {
            name: {
                "first_mib": values[0] / mib,
                "last_mib": values[-1] / mib,
                "max_mib": max(values) / mib,
                "slope_mib_per_min": series.slope_mib_per_min(name),
            }
            for name, values in series.rss_bytes.items()
        },
        "samples": {"t": series.seconds, **series.rss_bytes},
    }


def summarise(target: Target) -> dict[str, Any]:
    mib = 1024 * 1024
    peak = peak_step(target)
    stream = target.stream or StreamResult()
    peak_rss = target.gateway.peak_rss_bytes()
    return {
        "label": target.label,
        "processes": sorted(target.gateway.roots),
        "peak": {
            "rps": peak.rps if peak else 0.0,
            "connections": peak.connections if peak else None,
            "still_rising": target.still_rising,
            "steps": [asdict(step) for step in target.peak_steps],
        },
        "rates": {str(rate): asdict(result) for rate, result in target.rates.items()},
        "rate_rounds": {
            str(rate): [asdict(result) for result in rounds]
            for rate, rounds in target.rate_rounds.items()
        },
        "stream": {
            "calls": len(stream.ttft_ms),
            "errors": stream.errors,
            "error_kinds": stream.error_kinds,
            "ttft_p50_ms": percentile(stream.ttft_ms, 0.5),
            "ttft_p50_by_round_ms": target.stream_round_ttft_p50,
            "ttft_p99_ms": percentile(stream.ttft_ms, 0.99),
            "gap_p50_ms": percentile(stream.gap_ms, 0.5),
            "gap_p99_ms": percentile(stream.gap_ms, 0.99),
            "total_p50_ms": percentile(stream.total_ms, 0.5),
            "total_p99_ms": percentile(stream.total_ms, 0.99),
            "content_events_mean": statistics.fmean(stream.content_events)
            if stream.content_events
            else 0.0,
        },
        "cpu": {
            "seconds": target.cpu_s,
            "infra_seconds": target.infra_cpu_s,
            "calls": target.calls,
            "seconds_per_1k_calls": target.cpu_s / target.calls * 1000 if target.calls else None,
            "with_infra_seconds_per_1k_calls": (target.cpu_s + target.infra_cpu_s)
            / target.calls
            * 1000
            if target.calls
            else None,
        },
        "peak_rss_mib": {name: value / mib for name, value in peak_rss.items()},
        "peak_rss_total_mib": sum(peak_rss.values()) / mib,
        **settlement_summary(target, peak),
    }


def settlement_summary(target: Target, peak: LoadResult | None) -> dict[str, Any]:
    """Billing at the peak step (the step that gave the peak RPS), per step, and drained."""
    if target.billing is None:
        return {}
    return {
        "settlement": {
            "at_peak": target.settlement.get(peak.connections) if peak else None,
            "peak_rps": peak.rps if peak else None,
            "steps": {str(c): figures for c, figures in target.settlement.items()},
            "drain": target.drain,
        }
    }


def execute(plan: Plan, out_dir: Path, *, pin: bool) -> dict[str, Any]:
    """The whole run; returns the results document (also the input of the report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # Other work on the machine (a shared VM) moves every absolute figure: say how busy it was.
    load_at_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="aig-bench-") as tmp,
        environment(plan, Path(tmp)) as env,
    ):
        targets = build_targets(env)
        cpus = DRIVER_CPUS if pin else None
        if pin:
            pin_cpus(env, targets)
        log("warming up: " + ", ".join(t.name for t in targets))
        for target in targets:
            run_oha(target.request, seconds=1, connections=4, cpus=cpus)
        measure_peak(plan, targets, cpus)
        aig = next(t for t in targets if t.name == "aig")
        measure_drain(plan, aig, cpus)
        measure_rates(plan, targets, cpus)
        if plan.stream_calls:
            measure_streams(plan, targets)
        profile = profile_aig(plan, aig, out_dir, cpus) if plan.profile_seconds else None
        soaked = next(t for t in targets if t.name == plan.soak_target)
        soak = soak_aig(plan, soaked, cpus) if plan.soak_seconds else None
        from . import scaleout  # it builds on this module's targets and phases

        scaled = (
            scaleout.scale_out(plan, env, targets, work_dir=Path(tmp) / "two-core")
            if plan.scaleout
            else None
        )
        results = {
            "plan": plan.as_dict(),
            "upstream": SANDBOX_ENV,
            "pinned": {"targets": sorted(TARGET_CPUS), "driver": sorted(DRIVER_CPUS)}
            if pin
            else None,
            "started_at": started,
            "load_average_at_start": load_at_start,
            "litellm_version": litellm_version() if plan.compare_litellm else None,
            "unavailable": env.unavailable,
            "targets": {target.name: summarise(target) for target in targets},
            "profile": profile,
            "soak": soak,
            "scaleout": scaled,
        }
    # After every stack is gone, so billing's core and the broker's have nothing else.
    if plan.billing_backlog_events:
        log(f"billing alone on one core: {plan.billing_backlog_events} events from a backlog")
        backlog = billing_throughput.measure(plan.billing_backlog_events, one_core=pin)
        log(f"billing settled {backlog['billing_events_per_s']} events/s from the backlog")
        results["billing_backlog"] = backlog
    results["elapsed_s"] = time.time() - started
    return results
