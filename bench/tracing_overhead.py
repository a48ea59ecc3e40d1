"""What OpenTelemetry tracing costs per call: the CPU of the services on a chat call's path
(edge, router, billing; from /proc) over the same calls with tracing off (no endpoint: the
default) and on (every call sampled and exported over OTLP/HTTP to a receiver in this
process, which decodes what it gets). One stack per mode, started the same way; the ratio
on/off is the figure to read, absolute CPU moves with the machine's load.

python -m bench.tracing_overhead (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import httpx

from aig_common import tracing
from tests.e2e.otlp_receiver import OtlpReceiver

from .aig_target import create_api_key, gateway_processes, start_stack
from .plan import SANDBOX_ENV
from .procs import ProcessGroup

CALLS = 2000
CALL_PATH = {"edge", "router", "billing"}
CONCURRENCY = 16
OUT = Path(__file__).parent / "out" / "tracing.json"
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 20,
}


async def _drive(base: str, key: str, calls: int) -> int:
    """Sends `calls` chat calls, CONCURRENCY at a time; returns how many answered 200."""
    ok = 0
    queue: asyncio.Queue[None] = asyncio.Queue()
    for _ in range(calls):
        queue.put_nowait(None)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def worker() -> None:
            nonlocal ok
            while not queue.empty():
                queue.get_nowait()
                response = await client.post("/v1/chat/completions", json=BODY)
                ok += response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return ok


def _run(traced: bool, calls: int) -> dict[str, Any]:
    receiver = OtlpReceiver()
    receiver.start()
    env = dict(SANDBOX_ENV)
    if traced:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    try:
        with tempfile.TemporaryDirectory() as directory:
            stack = start_stack(Path(directory), env)
            try:
                key = create_api_key(stack)
                asyncio.run(_drive(stack.edge_url, key, 200))  # warm-up
                time.sleep(2)
                # The services a chat call passes through; jobs' and webhooks' idle polling
                # would only add noise.
                every = gateway_processes(stack).roots
                gateway = ProcessGroup({n: pid for n, pid in every.items() if n in CALL_PATH})
                before = gateway.cpu_seconds()
                started = time.monotonic()
                ok = asyncio.run(_drive(stack.edge_url, key, calls))
                elapsed = time.monotonic() - started
                # Billing settles (and, traced, every span is exported) within this.
                time.sleep(3)
                cpu = gateway.cpu_seconds() - before
            finally:
                stack.stop()
    finally:
        receiver.stop()
    return {
        "calls": calls,
        "ok": ok,
        "calls_per_s": round(calls / elapsed, 1),
        "cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "spans_received": len(receiver.spans),
    }


def _off_path_ns() -> float:
    """What one call pays for tracing when it is off: the helpers a chat call passes through
    (edge: the outgoing traceparent; router: the call's span, one attempt's span, the usage
    event's headers), timed in this process with tracing off."""
    assert not tracing.enabled()
    received = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def one_call() -> None:
        tracing.outgoing_traceparent(received)
        with tracing.remote_span("router", received) as call:
            with tracing.span("upstream attempt") as attempt:
                tracing.set_attributes(attempt, {})
            tracing.kafka_headers(received)
            tracing.set_attributes(call, {})

    runs = 200_000
    return min(timeit.repeat(one_call, number=runs, repeat=5)) / runs * 1e9


def measure(calls: int = CALLS) -> dict[str, Any]:
    off = _run(traced=False, calls=calls)
    on = _run(traced=True, calls=calls)
    off_path_ns = _off_path_ns()
    return {
        "concurrency": CONCURRENCY,
        "off": off,
        "on": on,
        "cpu_on_over_off": round(on["cpu_us_per_call"] / off["cpu_us_per_call"], 3),
        "off_path_ns_per_call": round(off_path_ns),
        "off_path_share_of_cpu": round(off_path_ns / 1000 / off["cpu_us_per_call"], 5),
    }


def main() -> None:
    results = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
