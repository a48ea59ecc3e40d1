"""stripe-mock (Stripe's own API test server) as a child process, for tests and demos.

`scripts/install_stripe_mock.sh` builds it from the Go module proxy into .tools/bin.
"""

from __future__ import annotations

import os
import subprocess
import time

import httpx

from .kafka import REPO_ROOT
from .lifetime import die_with_parent_preexec
from .processes import free_port

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_stripe_mock.sh"
BINARY = REPO_ROOT / ".tools" / "bin" / "stripe-mock"


class StripeMock:
    def __init__(self) -> None:
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> str:
        """Starts it on a free port; it loads all of Stripe's API spec first (seconds)."""
        subprocess.run([str(INSTALL_SCRIPT)], check=True)
        address = f"127.0.0.1:{free_port()}"
        self._process = subprocess.Popen(
            # Both listeners on free ports: it opens HTTPS on :12112 unless told otherwise.
            [str(BINARY), "-http-addr", address, "-https-addr", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A killed test run or `make up` takes it along, as it does every other child.
            preexec_fn=die_with_parent_preexec(os.getpid()),
        )
        self.url = f"http://{address}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                httpx.get(f"{self.url}/v1/charges", timeout=1)  # any answer (401) will do
                return self.url
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("stripe-mock did not start")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
