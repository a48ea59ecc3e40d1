"""CPU time, memory and CPU affinity of a set of processes, read from /proc (Linux only).

psutil is not a project dependency, and these are the only three facts the harness needs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (workers a server forks count as its own)."""
    found = [pid]
    index = 0
    while index < len(found):
        for task in Path(f"/proc/{found[index]}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
        index += 1
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core of the machine since boot, from /proc/stat's
    first line: busy is all but idle and iowait, whoever spent it (the gateway, oha, the
    sandbox, Kafka, the harness or anything else on the machine)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    # guest and guest_nice (fields 9 and 10) are already inside user and nice.
    busy = user + nice + system + irq + softirq + steal
    return busy / CLOCK_TICKS, (busy + idle + iowait) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """The busy part of machine_cpu_seconds()."""
    return machine_cpu_seconds()[0]


def wait_until_quiet(
    cpu_seconds: Callable[[], float], *, window_s: float, quiet_s: float, limit_s: float
) -> bool:
    """Waits until `cpu_seconds` (of a process or a group) grows by less than `quiet_s` over
    a window of `window_s`; False if it never did within `limit_s`."""
    deadline = time.monotonic() + limit_s
    before = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = cpu_seconds()
        if now - before < quiet_s:
            return True
        before = now
    return False


def _status_kib(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of the resident set since the process started."""
    return _status_kib(pid, "VmHWM") * 1024


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of `pid` to `cpus`; threads created later inherit the mask."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        # A thread may end between listing and pinning.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


@dataclass
class ProcessGroup:
    """The processes that make up one target, e.g. aig's edge and router."""

    roots: dict[str, int]

    def pids(self) -> dict[str, list[int]]:
        return {name: descendants(pid) for name, pid in self.roots.items()}

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pids in self.pids().values() for pid in pids)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pids in self.pids().values() for pid in pids)

    def peak_rss_bytes(self) -> dict[str, int]:
        """Per named process, the sum of its tree's high-water marks (an upper bound)."""
        return {
            name: sum(peak_rss_bytes(pid) for pid in pids) for name, pids in self.pids().items()
        }

    def pin(self, cpus: set[int]) -> None:
        for pids in self.pids().values():
            for pid in pids:
                pin(pid, cpus)
