"""What one edge -> router gRPC hop costs on this machine, with nothing else in the way:
a grpc.aio client calls a servicer that answers at once, in another process, over the same
contract (aig.router.v1). Measured back to back and with a 20 ms gap between calls (as at
50 calls/s), because an idle machine pays for waking its threads on every call.

python -m bench.grpc_hop (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time

import grpc
import uvloop

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from devstack.processes import free_port

CALLS = 400
GAP_S = 0.02


class _Instant(pb_grpc.RouterServicer):
    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        return pb.ChatResponse(completion=b"{}", provider="sandbox", attempts=1)


async def _serve(address: str, ready: multiprocessing.synchronize.Event) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RouterServicer_to_server(_Instant(), server)
    server.add_insecure_port(address)
    await server.start()
    ready.set()
    await server.wait_for_termination()


def _server_process(address: str, ready: multiprocessing.synchronize.Event) -> None:
    uvloop.run(_serve(address, ready))


async def _round_trips(address: str) -> dict[str, dict[str, float]]:
    request = pb.ChatRequest(context=pb.CallContext(request_id="req_bench"), body=b"{}" * 100)
    figures: dict[str, dict[str, float]] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RouterStub(channel)
        for _ in range(100):
            await stub.ChatCompletion(request)
        for name, gap in (("back_to_back", 0.0), ("every_20_ms", GAP_S)):
            samples = []
            for _ in range(CALLS):
                started = time.perf_counter()
                await stub.ChatCompletion(request)
                samples.append((time.perf_counter() - started) * 1000)
                if gap:
                    await asyncio.sleep(gap)
            figures[name] = {
                "p50_ms": round(statistics.median(samples), 3),
                "p90_ms": round(statistics.quantiles(samples, n=10)[-1], 3),
            }
    return figures


def _measure_at(address: str) -> dict[str, dict[str, float]]:
    # Spawned, not forked: a forked child would inherit this process's gRPC internals.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=_server_process, args=(address, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the gRPC test server did not start")
        return uvloop.run(_round_trips(address))
    finally:
        server.terminate()
        server.join(10)


def measure() -> dict[str, object]:
    """Over loopback TCP (what Kubernetes uses between pods) and over a Unix domain socket
    (`unix:` addresses, for an edge and a router on one host), one after the other."""
    with tempfile.TemporaryDirectory() as directory:
        unix = _measure_at(f"unix:{directory}/router.sock")
    tcp = _measure_at(f"127.0.0.1:{free_port()}")
    return {
        "calls": CALLS,
        "round_trip": tcp,
        "round_trip_unix": unix,
        "unix_over_tcp_p50": {
            name: round(unix[name]["p50_ms"] / tcp[name]["p50_ms"], 2) for name in tcp
        },
    }


if __name__ == "__main__":
    print(measure())
