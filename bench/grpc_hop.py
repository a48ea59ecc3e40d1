"""What one edge -> router gRPC hop costs on this machine, with nothing else in the way:
a grpc.aio client calls a servicer that answers at once, in another process, over the same
contract (aig.router.v1), bare and as the edge makes it (`RouterCalls.complete`, which also
watches for the client hanging up). Measured back to back and with a 20 ms gap between calls (as at
50 calls/s), because an idle machine pays for waking its threads on every call.

python -m bench.grpc_hop (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from typing import cast

import grpc
import uvloop
from starlette.requests import Request

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from controldb.money import Admission
from devstack.processes import free_port
from edge.admission import Admissions
from edge.router_calls import RouterCalls

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


class _ConnectedClient:
    """An ASGI request whose client stays: `receive` waits for a disconnect that never
    comes, as uvicorn's does once the body has been read."""

    def __init__(self) -> None:
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, str]:
        await self._gone.wait()
        return {"type": "http.disconnect"}


async def _round_trips(address: str) -> dict[str, dict[str, float]]:
    request = pb.ChatRequest(context=pb.CallContext(request_id="req_bench"), body=b"{}" * 100)
    figures: dict[str, dict[str, float]] = {}
    client = cast(Request, _ConnectedClient())
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RouterStub(channel)
        # The edge's own unary call: the same RPC raced with the client's disconnect (one
        # more task per call), so a client that hangs up cancels it.
        calls = RouterCalls(cast(Admissions, None))
        calls.connect(stub)
        admission = cast(Admission, None)

        async def plain() -> None:
            await stub.ChatCompletion(request)

        async def watched() -> None:
            await calls.complete(request, admission, client)

        for _ in range(100):
            await plain()
            await watched()
        for name, gap in (("back_to_back", 0.0), ("every_20_ms", GAP_S)):
            # Alternated call by call, so drift in the machine's load falls on both alike.
            samples: dict[str, list[float]] = {name: [], f"watched_{name}": []}
            for _ in range(CALLS):
                for label, call in ((name, plain), (f"watched_{name}", watched)):
                    started = time.perf_counter()
                    await call()
                    samples[label].append((time.perf_counter() - started) * 1000)
                    if gap:
                        await asyncio.sleep(gap)
            for label, taken in samples.items():
                figures[label] = {
                    "p50_ms": round(statistics.median(taken), 3),
                    "p90_ms": round(statistics.quantiles(taken, n=10)[-1], 3),
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
        # The edge's hang-up watch (router_calls.complete) against the bare RPC, over TCP.
        "watched_over_plain_p50": {
            name: round(tcp[f"watched_{name}"]["p50_ms"] / tcp[name]["p50_ms"], 3)
            for name in ("back_to_back", "every_20_ms")
        },
    }


if __name__ == "__main__":
    print(measure())
