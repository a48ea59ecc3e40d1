"""The two-core phase's upstream: `bench/upstream` (Go), built and run on one port.

In the two-core phase the gateway shares the machine's two cores with the load generator
and the upstream. The sandbox (Python) spent 0.12-0.15 ms of CPU a call there, about 0.4 of
the two cores at aig's two-core peak, though a real provider runs on none of the gateway's
cores. This upstream answers the same calls in the same wire format and size for about a
quarter of that (`python -m bench.compiled_upstream` measures both). Every other phase
keeps the sandbox: it is the baseline the latency overheads are measured against, and it
keeps its latency to the microsecond (services/sandbox/timer.py), where Go's timers spread
about a millisecond, which a peak in calls a second does not see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

from .install import ensure_installed

HERE = Path(__file__).parent
SOURCE = HERE / "upstream"
BINARY = HERE / ".tools" / "bin" / "aig-bench-upstream"


def build(output: Path = BINARY) -> Path:
    """`go build`: a second or two from Go's build cache, ~15 s the first time."""
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "build", "-o", str(output), "."],
        cwd=SOURCE,
        check=True,
        env={**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"},
    )
    return output


def arguments(sandbox_env: dict[str, str]) -> list[str]:
    """The sandbox's latency and answer settings (`AIG_SANDBOX_*`) as the upstream's flags."""
    flags = {
        "AIG_SANDBOX_LATENCY_MS": "-latency-ms",
        "AIG_SANDBOX_CHUNK_INTERVAL_MS": "-chunk-interval-ms",
        "AIG_SANDBOX_STREAM_CHUNKS": "-stream-chunks",
        "AIG_SANDBOX_ANSWER_TOKENS": "-answer-tokens",
    }
    out: list[str] = []
    for name, flag in flags.items():
        if name in sandbox_env:
            out += [flag, str(int(sandbox_env[name]))]
    return out


class CompiledUpstream:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: IO[bytes]) -> None:
        self.process = process
        self.url = url
        self._log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start(
    port: int, sandbox_env: dict[str, str], *, binary: Path | None = None
) -> CompiledUpstream:
    """Builds the upstream (unless `binary` is given) and serves it on 127.0.0.1:`port`,
    ready once /healthz answers."""
    executable = binary or build()
    # Its log goes to a file, not a pipe nobody reads while it runs: net/http logs what it
    # refuses (a failed accept, a malformed request) to stderr, and a full pipe would stall
    # the goroutine writing it.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open while it runs; closed by stop())
    process = subprocess.Popen(
        [str(executable), "-addr", f"127.0.0.1:{port}", *arguments(sandbox_env)],
        # Go's default, a scheduler thread per core. GOMAXPROCS=1 cost 26 CPU-us a call
        # against 34 on an otherwise idle machine, but in the two-core phase itself only
        # 30-36 against 35-37, and aig's peak there was no higher (three pairs: 4,404,
        # 4,293, 4,045 calls/s against 4,349, 4,401, 4,324): one thread waits its turn
        # behind the gateway's busy ones.
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    upstream = CompiledUpstream(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_healthy(upstream.url, process)
    except RuntimeError as failure:
        log.seek(0)
        message = log.read().decode()
        upstream.stop()
        raise RuntimeError(f"{failure}: {message}") from None
    return upstream


def wait_healthy(url: str, process: subprocess.Popen[bytes], *, seconds: float = 30) -> None:
    """Returns once `url`/healthz answers 200; raises if `process` exits first or the time
    runs out."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it answered")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer /healthz in {seconds:.0f} s")
        time.sleep(0.05)


def main() -> None:
    """The CPU a call of the sandbox and of this upstream, both pinned to CPU 0 and driven
    by oha from CPU 1 at the same rates, in turn: what the two-core phase saves."""
    ensure_installed()
    from devstack.processes import free_port

    from .loadgen import Request, run_oha
    from .plan import SANDBOX_ENV
    from .procs import cpu_seconds
    from .run import CALL_BODY

    body = json.dumps(CALL_BODY).encode()
    sandbox_port, compiled_port = free_port(), free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox"],
        env={
            **os.environ,
            **SANDBOX_ENV,
            "AIG_SANDBOX_HOST": "127.0.0.1",
            "AIG_SANDBOX_PORT": str(sandbox_port),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    compiled = start(compiled_port, SANDBOX_ENV)
    try:
        wait_healthy(f"http://127.0.0.1:{sandbox_port}", sandbox)
        upstreams = {
            "sandbox": (sandbox.pid, f"http://127.0.0.1:{sandbox_port}"),
            "compiled": (compiled.pid, compiled.url),
        }
        for pid, _ in upstreams.values():
            os.sched_setaffinity(pid, {0})
        for rate in (1500, 3000):
            for name, (pid, url) in upstreams.items():
                request = Request(f"{url}/openai/v1/chat/completions", "sk-bench", body)
                run_oha(request, seconds=2, connections=64, rate=rate, cpus={1})  # warm-up
                before = cpu_seconds(pid)
                result = run_oha(request, seconds=10, connections=128, rate=rate, cpus={1})
                used = cpu_seconds(pid) - before
                print(
                    f"{rate}/s {name}: {result.ok} calls, p50 {result.p50_ms:.2f} ms, "
                    f"CPU {used / max(1, result.ok) * 1e6:.0f} us a call",
                    flush=True,
                )
    finally:
        compiled.stop()
        sandbox.terminate()
        sandbox.wait()


if __name__ == "__main__":
    main()
