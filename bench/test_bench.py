"""Unit tests of the harness's arithmetic: `.venv/bin/pytest bench -q` (no processes started)."""

from __future__ import annotations

import os
from pathlib import Path

from .loadgen import DEADLINE_ABORT, parse_report
from .procs import ProcessGroup, cpu_seconds, descendants
from .profiling import hot_functions
from .soak import SoakSeries


def test_oha_report_counts_non_2xx_and_transport_errors_but_not_deadline_aborts() -> None:
    report = {
        "summary": {"total": 2.0, "successRate": 1.0},
        "latencyPercentiles": {"p50": 0.021, "p90": 0.03, "p99": 0.05},
        "statusCodeDistribution": {"200": 396, "502": 2},
        "errorDistribution": {DEADLINE_ABORT: 7, "connection closed": 2},
    }
    result = parse_report(report, connections=8, rate=None)
    assert result.ok == 396
    assert result.errors == 4
    assert result.error_kinds == {"http 502": 2, "connection closed": 2}
    assert result.rps == 198.0
    assert round(result.p50_ms, 3) == 21.0
    assert result.error_ratio == 4 / 400


def test_hot_functions_split_self_and_total_time(tmp_path: Path) -> None:
    collapsed = tmp_path / "raw.txt"
    collapsed.write_text(
        "main (a.py:1);handle (b.py:2);encode (c.py:3) 6\n"
        "main (a.py:1);handle (b.py:2) 3\n"
        "thread (0x1);main (a.py:1) 1\n"
    )
    hot = {h.function: h for h in hot_functions(collapsed)}
    assert hot["encode (c.py:3)"].self_share == 0.6
    assert hot["handle (b.py:2)"].self_share == 0.3
    assert hot["handle (b.py:2)"].total_share == 0.9
    assert hot["main (a.py:1)"].total_share == 1.0


def test_soak_slope_is_in_mib_per_minute() -> None:
    mib = 1024 * 1024
    series = SoakSeries(seconds=[0, 30, 60], rss_bytes={"edge": [100 * mib, 101 * mib, 102 * mib]})
    assert abs(series.slope_mib_per_min("edge") - 2.0) < 1e-9
    flat = SoakSeries(seconds=[0, 30, 60], rss_bytes={"edge": [5 * mib] * 3})
    assert flat.slope_mib_per_min("edge") == 0.0


def test_this_process_is_seen_with_its_cpu_time() -> None:
    pid = os.getpid()
    assert descendants(pid)[0] == pid
    sum(i * i for i in range(200_000))  # burn a little CPU so the counter moves
    group = ProcessGroup({"self": pid})
    alone = cpu_seconds(pid)
    assert alone > 0
    assert group.cpu_seconds() >= alone
    assert group.rss_bytes() > 0
    assert group.peak_rss_bytes()["self"] >= group.rss_bytes()
