"""`make up` supervises its children, and every child dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from devstack.lifetime import Supervisor
from devstack.processes import Service, free_port


class FlakyUnit:
    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.restarts = 0

    def running(self) -> bool:
        return self.alive

    def restart(self) -> None:
        self.restarts += 1
        self.alive = True


def _wait(condition: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_crashed_unit_is_restarted_and_reported() -> None:
    unit, steady = FlakyUnit("router"), FlakyUnit("edge")
    lines: list[str] = []
    supervisor = Supervisor([unit, steady], lines.append, poll_s=0.02, max_backoff_s=0.1)
    supervisor.start()
    try:
        unit.alive = False
        _wait(lambda: unit.restarts == 1)
        unit.alive = False
        _wait(lambda: unit.restarts == 2)
    finally:
        supervisor.stop()
    assert steady.restarts == 0
    assert any("router exited (crash 1 in a row)" in line for line in lines)
    assert any("router exited (crash 2 in a row)" in line for line in lines)
    assert sum("router restarted" in line for line in lines) == 2


def test_a_real_service_killed_with_sigkill_comes_back(tmp_path: Path) -> None:
    port = free_port()
    service = Service(
        "sandbox",
        "sandbox",
        {"AIG_SANDBOX_PORT": str(port)},
        f"http://127.0.0.1:{port}/healthz",
        tmp_path / "sandbox.log",
    )
    service.start()
    service.wait_ready()
    supervisor = Supervisor([service], lambda _: None, poll_s=0.1)
    supervisor.start()
    try:
        assert service.process is not None
        first = service.process.pid
        os.kill(first, signal.SIGKILL)
        _wait(lambda: service.process is not None and service.process.pid != first, 30)
        service.wait_ready()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
        service.stop()


def test_children_die_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent (as `make up` or a test run would be) starts a service, then is killed -9:
    the service must not outlive it."""
    port = free_port()
    parent = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from devstack.processes import Service
        service = Service("sandbox", "sandbox", {{"AIG_SANDBOX_PORT": "{port}"}},
                          "http://127.0.0.1:{port}/healthz", Path({str(tmp_path)!r}) / "s.log")
        service.start()
        service.wait_ready()
        print(service.process.pid, flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    try:
        assert process.stdout is not None
        child = int(process.stdout.readline())
        os.kill(child, 0)  # alive
        process.kill()
        process.wait()

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # A zombie whose parent died is reaped by init; until then it still "exists".
            status = Path(f"/proc/{child}/status")
            return status.exists() and "zombie" in status.read_text()

        _wait(gone, 30)
    finally:
        process.kill()
