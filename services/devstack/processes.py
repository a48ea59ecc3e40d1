"""Child processes of the local stack: start with an environment, wait until ready, stop."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .lifetime import die_with_parent_preexec

# Ports are handed out below the kernel's ephemeral range. A port the kernel picked for
# bind(0) is an ephemeral one, and between our probe closing it and the service binding it,
# any outgoing connection (a Kafka client, an HTTP probe) may take it as its local port:
# CI saw a billing consumer fail to bind for exactly that reason.
_LOWEST_PORT = 10_000
_handed_out: set[int] = set()
_port_lock = threading.Lock()


def ephemeral_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32_768, 60_999  # Linux's default
    return range(low, high + 1)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            # No SO_REUSEADDR: a port with a connection in TIME_WAIT counts as taken too.
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _candidate_ports() -> list[int]:
    ephemeral = ephemeral_port_range()
    return [port for port in range(_LOWEST_PORT, 65_536) if port not in ephemeral]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, outside the ephemeral range (so no
    outgoing connection can take it before its service binds it) and not handed out
    before by this process (so two services started together never share one)."""
    candidates = _candidate_ports()
    with _port_lock:
        # A random start keeps two test runs on one machine from probing in lockstep.
        start = random.randrange(len(candidates))
        for index in range(len(candidates)):
            port = candidates[(start + index) % len(candidates)]
            if port in _handed_out or not _port_is_free(port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 outside the ephemeral range")


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout_s} s")


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str]
    ready_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Its own session (a Ctrl-C for the parent must not reach it first), yet it
            # still dies with the parent: a killed `make up` or test run leaves nothing.
            preexec_fn=die_with_parent_preexec(os.getpid()),
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        self.start()

    def wait_ready(self, timeout_s: float = 60) -> None:
        assert self.process is not None
        try:
            wait_for_http(self.ready_url, self.process, timeout_s)
        except Exception as exc:
            tail = self.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{self.name} did not start: {exc}\n--- log ---\n{tail}") from exc

    def stop(self, timeout_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
