"""Children that die with their parent, and a supervisor that restarts the ones that crash.

Every child of `make up` and of the test fixtures runs in its own session (a Ctrl-C for the
parent must not reach a broker before the services that flush to it), so nothing kills it
when the parent is killed. `die_with_parent` asks Linux to send SIGTERM to the child when
the parent dies (PR_SET_PDEATHSIG), so a killed test run or `make up` leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

_PR_SET_PDEATHSIG = 1
_libc_prctl: Callable[..., int] | None = None
if sys.platform == "linux":
    # Looked up before any fork: the child may only make the system call.
    _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent_preexec(
    parent_pid: int, signal_number: int = signal.SIGTERM
) -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: send `signal_number` (SIGTERM) to this child when
    `parent_pid` (the caller) dies.

    Linux ties the signal to the thread that forked; Popen is called from long-lived threads
    here (the main thread, the supervisor's thread). A change of user clears the setting,
    but Popen's `user=` switches before `preexec_fn` runs. None on other platforms."""
    prctl = _libc_prctl
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal_number)
        if os.getppid() != parent_pid:  # the parent died before the prctl took effect
            os._exit(1)

    return preexec


class Supervised(Protocol):
    name: str

    def running(self) -> bool: ...

    def restart(self) -> None: ...


@dataclass
class _Unit:
    target: Supervised
    failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    due_at: float | None = None


class Supervisor:
    """Polls its units; one that exited is restarted after a backoff that doubles with each
    crash in a row (1 s … `max_backoff_s`) and resets once it has stayed up `healthy_after_s`.
    Every crash and restart is reported through `report` (the `make up` console)."""

    def __init__(
        self,
        units: list[Supervised],
        report: Callable[[str], None],
        *,
        poll_s: float = 0.5,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self._units = [_Unit(unit) for unit in units]
        self._report = report
        self._poll_s = poll_s
        self._max_backoff_s = max_backoff_s
        self._healthy_after_s = healthy_after_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devstack-supervisor", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_s):
            for unit in self._units:
                self._check(unit)

    def _check(self, unit: _Unit) -> None:
        now = time.monotonic()
        if unit.due_at is None:
            if unit.target.running():
                if now - unit.started_at >= self._healthy_after_s:
                    unit.failures = 0
                return
            unit.failures += 1
            delay = min(self._max_backoff_s, 2.0 ** (unit.failures - 1))
            unit.due_at = now + delay
            self._report(
                f"[supervisor] {unit.target.name} exited (crash {unit.failures} in a row); "
                f"restarting in {delay:g} s"
            )
            return
        if now < unit.due_at or self._stopping.is_set():
            return
        unit.due_at = None
        unit.started_at = now
        try:
            unit.target.restart()
        except Exception as exc:  # a failed start is one more crash, retried with backoff
            self._report(f"[supervisor] {unit.target.name} failed to start: {exc}")
            return
        self.restarts += 1
        self._report(f"[supervisor] {unit.target.name} restarted")
