"""Runs oha (the load generator) and reduces its JSON report to the figures the bench uses."""

from __future__ import annotations

import json
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .procs import pin

OHA = Path(__file__).parent / ".tools" / "bin" / "oha"
# oha's name for requests still in flight when the duration ends: not failures of the target.
DEADLINE_ABORT = "aborted due to deadline"


@dataclass(frozen=True)
class Request:
    url: str
    api_key: str
    body: bytes


@dataclass
class LoadResult:
    """One oha run: `rate` is the open-loop target (None for closed-loop at `connections`)."""

    connections: int
    rate: float | None
    seconds: float
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def error_ratio(self) -> float:
        total = self.ok + self.errors
        return self.errors / total if total else 1.0


def combined(rounds: list[LoadResult]) -> LoadResult:
    """Several runs of one target at one rate as one figure: calls, errors and seconds
    added up, each percentile the median of the runs' (oha reports percentiles, not the
    latencies they come from)."""
    if not rounds:
        raise ValueError("no rounds to combine")
    seconds = sum(r.seconds for r in rounds)
    ok = sum(r.ok for r in rounds)
    kinds: Counter[str] = Counter()
    for r in rounds:
        kinds.update(r.error_kinds)
    return LoadResult(
        connections=rounds[0].connections,
        rate=rounds[0].rate,
        seconds=seconds,
        ok=ok,
        errors=sum(r.errors for r in rounds),
        error_kinds=dict(kinds),
        rps=ok / seconds if seconds else 0.0,
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p90_ms=statistics.median(r.p90_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
    )


def duration(seconds: float) -> str:
    """oha's spelling of a duration: it refuses a fraction of a second ("121.0s")."""
    return f"{round(seconds * 1000)}ms"


def oha_command(
    request: Request,
    *,
    seconds: float,
    connections: int,
    rate: float | None = None,
    timeout_s: float = 15,
) -> list[str]:
    """Closed-loop with `connections` when `rate` is None, else open-loop at `rate` per second.

    Open-loop uses latency correction: latency counts from when a request was due, so a
    target that falls behind shows its queueing instead of hiding it (coordinated omission).
    """
    command = [
        str(OHA),
        "--no-tui",
        "--output-format",
        "json",
        "-z",
        duration(seconds),
        "-c",
        str(connections),
        "-t",
        f"{timeout_s}s",
        "-m",
        "POST",
        "-H",
        f"Authorization: Bearer {request.api_key}",
        "-T",
        "application/json",
        "-d",
        request.body.decode(),
    ]
    if rate is not None:
        command += ["-q", str(rate), "--latency-correction"]
    command.append(request.url)
    return command


class OhaRun:
    """One oha process running in the background; `result()` waits for its report."""

    def __init__(
        self,
        request: Request,
        *,
        seconds: float,
        connections: int,
        rate: float | None = None,
        timeout_s: float = 15,
        cpus: set[int] | None = None,
    ) -> None:
        self.connections = connections
        self.rate = rate
        self.deadline_s = seconds + timeout_s + 60
        command = oha_command(
            request, seconds=seconds, connections=connections, rate=rate, timeout_s=timeout_s
        )
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if cpus is not None:
            pin(self.process.pid, cpus)

    def result(self) -> LoadResult:
        stdout, stderr = self.process.communicate(timeout=self.deadline_s)
        if self.process.returncode != 0:
            raise RuntimeError(f"oha failed ({self.process.returncode}): {stderr.decode()[-2000:]}")
        return parse_report(json.loads(stdout), connections=self.connections, rate=self.rate)


def run_oha(
    request: Request,
    *,
    seconds: float,
    connections: int,
    rate: float | None = None,
    timeout_s: float = 15,
    cpus: set[int] | None = None,
) -> LoadResult:
    return OhaRun(
        request,
        seconds=seconds,
        connections=connections,
        rate=rate,
        timeout_s=timeout_s,
        cpus=cpus,
    ).result()


def parse_report(report: dict[str, object], *, connections: int, rate: float | None) -> LoadResult:
    summary = _mapping(report["summary"])
    statuses = {
        str(k): _count(v) for k, v in _mapping(report.get("statusCodeDistribution")).items()
    }
    failures = {
        str(k): _count(v)
        for k, v in _mapping(report.get("errorDistribution")).items()
        if str(k) != DEADLINE_ABORT
    }
    ok = sum(count for status, count in statuses.items() if status.startswith("2"))
    error_kinds = {f"http {s}": n for s, n in statuses.items() if not s.startswith("2")}
    error_kinds.update(failures)
    seconds = float(summary["total"])  # type: ignore[arg-type]
    percentiles = _mapping(report.get("latencyPercentiles"))

    def millis(name: str) -> float:
        value = percentiles.get(name)
        return float(value) * 1000 if isinstance(value, int | float) else float("nan")

    return LoadResult(
        connections=connections,
        rate=rate,
        seconds=seconds,
        ok=ok,
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        rps=ok / seconds if seconds else 0.0,
        p50_ms=millis("p50"),
        p90_ms=millis("p90"),
        p99_ms=millis("p99"),
    )


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) else 0


def _mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}
