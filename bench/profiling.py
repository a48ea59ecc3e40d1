"""py-spy flame graphs of aig's processes under load, and the hottest functions in them."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(__file__).parent / ".venv-tools" / "bin" / "py-spy"


@dataclass
class HotFunction:
    function: str
    self_share: float  # samples where it was the running frame
    total_share: float  # samples where it was anywhere on the stack


def start_py_spy(
    pid: int, output: Path, seconds: float, fmt: str, *, nonblocking: bool = True, gil: bool = False
) -> subprocess.Popen[bytes]:
    """Samples `pid`; --nonblocking reads it without pausing it, so the profile barely slows it.

    py-spy 0.4 sometimes panics in nonblocking mode on a process whose threads come and go
    (aiosqlite's); the caller retries those in the default, pausing mode. With `gil`, only
    the thread holding the GIL is sampled: where the Python CPU goes, without threads that
    merely wait for the GIL (which py-spy otherwise counts as busy).
    """
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            *(["--nonblocking"] if nonblocking else []),
            *(["--gil"] if gil else []),
            "--format",
            fmt,
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def hot_functions(collapsed: Path, top: int = 12) -> list[HotFunction]:
    """From py-spy's raw (collapsed-stack) output: `frame;frame;... count` per line."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # The thread name py-spy puts first is not a function.
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if not samples:
        return []
    return [
        HotFunction(frame, count / samples, total_counts[frame] / samples)
        for frame, count in self_counts.most_common(top)
    ]
