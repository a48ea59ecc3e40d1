"""RSS of aig's processes sampled under steady load, and its trend."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .procs import ProcessGroup, rss_bytes


@dataclass
class SoakSeries:
    seconds: list[float] = field(default_factory=list)
    rss_bytes: dict[str, list[int]] = field(default_factory=dict)

    def slope_mib_per_min(self, name: str) -> float:
        """Least-squares slope of one process's RSS; 0 means flat."""
        xs, ys = self.seconds, self.rss_bytes[name]
        n = len(xs)
        if n < 2:
            return 0.0
        mean_x, mean_y = sum(xs) / n, sum(ys) / n
        spread = sum((x - mean_x) ** 2 for x in xs)
        if not spread:
            return 0.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        return slope * 60 / (1024 * 1024)


def sample_rss(group: ProcessGroup, seconds: float, interval_s: float) -> SoakSeries:
    """Samples every `interval_s` for `seconds`; the caller keeps the load running meanwhile."""
    series = SoakSeries()
    started = time.monotonic()
    while True:
        now = time.monotonic() - started
        series.seconds.append(now)
        for name, pids in group.pids().items():
            series.rss_bytes.setdefault(name, []).append(sum(rss_bytes(pid) for pid in pids))
        if now + interval_s > seconds:
            break
        time.sleep(interval_s)
    return series
