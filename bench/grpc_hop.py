"""What one edge -> router gRPC hop costs on this machine, with nothing else in the way:
a grpc.aio client calls a servicer that answers at once, in another process, over the same
contract (aig.router.v1), bare and as the edge makes it (`RouterCalls.complete`, which also
watches for the client hanging up). Measured back to back and with a 20 ms gap between calls (as at
50 calls/s), because an idle machine pays for waking its threads on every call.

Also the same answer as a server stream (what a streamed chat of its own is), as one bare
message each way on a long-lived bidirectional stream (the floor for multiplexing), and as
the edge sends chat calls: multiplexed on Router.Calls streams (`edge/router_streams.py`
against the router's own `router/call_streams.py`), as gRPC streams and, as the edge does by
default, on the router's call socket (the same frames on plain TCP), each with the CPU both
processes spend per call.

python -m bench.grpc_hop (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import cast

import grpc
import uvloop
from starlette.requests import Request

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from controldb.money import Admission
from devstack.processes import free_port
from edge.admission import Admissions
from edge.call_socket import CallSockets
from edge.router_calls import RouterCalls, RouterLink
from edge.router_streams import GrpcCallChannel, RouterStreams
from edge.wire import HANG_UP_EXTENSION, HangUp
from router.call_socket import CallSocketServer
from router.call_streams import CallStreams

from .procs import cpu_seconds

CALLS = 400
GAP_S = 0.02
CPU_CALLS = 300
# A bidirectional method outside the router's contract, only in this benchmark's server.
BIDI_METHOD = "/aig.bench.Hop/Calls"


class _Instant(pb_grpc.RouterServicer):
    @staticmethod
    def reply() -> pb.ChatResponse:
        return pb.ChatResponse(completion=b"{}", provider="sandbox", attempts=1)

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> pb.ChatResponse:
        return self.reply()

    async def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]:
        yield pb.ChatStreamEvent(chunk=b"{}")

    async def Calls(
        self, request_iterator: AsyncIterator[pb.CallFrames], context: grpc.aio.ServicerContext
    ) -> None:
        await self.call_streams.serve(self, request_iterator, context)

    call_streams = CallStreams()


async def _answer_each(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    # Decoded and encoded as the router would, so the stream pays what a real one would.
    async for raw in requests:
        pb.ChatRequest.FromString(raw)
        yield _Instant.reply().SerializeToString()


async def _serve(address: str, calls_port: int, ready: multiprocessing.synchronize.Event) -> None:
    server = grpc.aio.server()
    servicer = _Instant()
    pb_grpc.add_RouterServicer_to_server(servicer, server)
    # The router's call socket: Router.Calls on plain TCP, beside gRPC, as the router runs it.
    await CallSocketServer(servicer.call_streams, servicer).start("127.0.0.1", calls_port)
    bidi = grpc.stream_stream_rpc_method_handler(_answer_each)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("aig.bench.Hop", {"Calls": bidi}),)
    )
    server.add_insecure_port(address)
    await server.start()
    ready.set()
    await server.wait_for_termination()


def _server_process(
    address: str, calls_port: int, ready: multiprocessing.synchronize.Event
) -> None:
    uvloop.run(_serve(address, calls_port, ready))


class _ConnectedClient:
    """An ASGI request whose client stays, served as the edge's protocol serves one: with
    the connection's hang-up signal in its scope (edge/wire.py)."""

    def __init__(self) -> None:
        self.scope = {"extensions": {HANG_UP_EXTENSION: {"signal": HangUp()}}}


async def _no_call() -> None:
    """No call at all: the calling process then spends only its wake from its own timer,
    which after 20 ms idle on this machine costs a good part of a call's CPU (the caches
    have gone cold). That is the gap's, not the hop's."""


async def _spent_ms(call: Callable[[], Awaitable[None]], server_pid: int) -> tuple[float, float]:
    """CPU ms per `call`, 20 ms apart, in the calling process and in the server's."""
    client_before, server_before = time.process_time(), cpu_seconds(server_pid)
    for _ in range(CPU_CALLS):
        await call()
        await asyncio.sleep(GAP_S)
    client = (time.process_time() - client_before) * 1000 / CPU_CALLS
    return client, (cpu_seconds(server_pid) - server_before) * 1000 / CPU_CALLS


async def _cpu_per_call(
    shapes: dict[str, Callable[[], Awaitable[None]]], server_pid: int
) -> dict[str, dict[str, float]]:
    """CPU ms per call in each process, 20 ms apart, one shape at a time (CPU cannot be
    told apart call by call). The client's figure is net of its timer's wake between calls
    (`gap_alone`: no call, measured before and after the shapes)."""
    gap_before, _ = await _spent_ms(_no_call, server_pid)
    spent = {name: await _spent_ms(call, server_pid) for name, call in shapes.items()}
    gap_after, _ = await _spent_ms(_no_call, server_pid)
    gap = (gap_before + gap_after) / 2
    figures: dict[str, dict[str, float]] = {"gap_alone": {"client_cpu_ms": round(gap, 3)}}
    for name, (client, server) in spent.items():
        figures[name] = {
            "client_cpu_ms": round(client - gap, 3),
            "server_cpu_ms": round(server, 3),
            "total_cpu_ms": round(client - gap + server, 3),
        }
    return figures


async def _round_trips(
    address: str, calls_port: int, server_pid: int
) -> dict[str, dict[str, float]]:
    request = pb.ChatRequest(context=pb.CallContext(request_id="req_bench"), body=b"{}" * 100)
    figures: dict[str, dict[str, float]] = {}
    client = cast(Request, _ConnectedClient())
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RouterStub(channel)
        # The edge's own unary call: the same RPC raced with the client's disconnect (one
        # more task per call), so a client that hangs up cancels it.
        calls = RouterCalls(cast(Admissions, None))
        calls.connect(RouterLink(stub))
        # The edge's chat calls multiplexed on a few long-lived gRPC streams
        # (AIG_ROUTER_CALLS_ADDRESS empty).
        multiplexed_calls = RouterCalls(cast(Admissions, None))
        streams = RouterStreams(partial(GrpcCallChannel, stub))
        multiplexed_calls.connect(RouterLink(stub, streams))
        # ... and as it makes them by default: the same streams on the router's call socket.
        socket_calls = RouterCalls(cast(Admissions, None))
        socket_streams = RouterStreams(CallSockets(f"127.0.0.1:{calls_port}").open)
        socket_calls.connect(RouterLink(stub, socket_streams))
        admission = cast(Admission, None)

        async def plain() -> None:
            await stub.ChatCompletion(request)

        async def watched() -> None:
            await calls.complete(request, admission, client)

        async def multiplexed() -> None:
            await multiplexed_calls.complete(request, admission, client)

        async def call_socket() -> None:
            await socket_calls.complete(request, admission, client)

        async def server_stream() -> None:
            async for _ in stub.StreamChatCompletion(request):
                pass

        # One stream for the whole run, one request and one answer per call on it.
        # No (de)serializers: bytes each way, encoded and decoded here as the stub would.
        bidi = channel.stream_stream(
            BIDI_METHOD, request_serializer=None, response_deserializer=None
        )(None)
        encoded = request.SerializeToString()

        async def bidi_message() -> None:
            await bidi.write(encoded)
            pb.ChatResponse.FromString(cast(bytes, await bidi.read()))

        shapes = {
            "": plain,
            "watched_": watched,
            "server_stream_": server_stream,
            "bidi_message_": bidi_message,
            "multiplexed_": multiplexed,
            "call_socket_": call_socket,
        }
        for _ in range(100):
            for warm_up in shapes.values():
                await warm_up()
        for name, gap in (("back_to_back", 0.0), ("every_20_ms", GAP_S)):
            # Alternated call by call, so drift in the machine's load falls on all alike.
            samples: dict[str, list[float]] = {f"{shape}{name}": [] for shape in shapes}
            for _ in range(CALLS):
                for label, call in ((f"{shape}{name}", fn) for shape, fn in shapes.items()):
                    started = time.perf_counter()
                    await call()
                    samples[label].append((time.perf_counter() - started) * 1000)
                    if gap:
                        await asyncio.sleep(gap)
            for label, taken in samples.items():
                figures[label] = {
                    "p50_ms": round(statistics.median(taken), 3),
                    "p90_ms": round(statistics.quantiles(taken, n=10)[-1], 3),
                    "p99_ms": round(statistics.quantiles(taken, n=100)[-1], 3),
                }
        cpu = await _cpu_per_call(
            {
                "unary": plain,
                "watched": watched,
                "server_stream": server_stream,
                "bidi_message": bidi_message,
                "multiplexed": multiplexed,
                "call_socket": call_socket,
            },
            server_pid,
        )
        for shape, spent in cpu.items():
            figures[f"cpu_{shape}_every_20_ms"] = spent
        bidi.cancel()
        streams.close()
        socket_streams.close()
    return figures


def _measure_at(address: str) -> dict[str, dict[str, float]]:
    # Spawned, not forked: a forked child would inherit this process's gRPC internals.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    calls_port = free_port()
    server = context.Process(target=_server_process, args=(address, calls_port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the gRPC test server did not start")
        assert server.pid is not None
        return uvloop.run(_round_trips(address, calls_port, server.pid))
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
            name: round(unix[name]["p50_ms"] / tcp[name]["p50_ms"], 2)
            for name in tcp
            if "p50_ms" in tcp[name]
        },
        # The edge's hang-up watch (router_calls.complete) against the bare RPC, over TCP.
        "watched_over_plain_p50": {
            name: round(tcp[f"watched_{name}"]["p50_ms"] / tcp[name]["p50_ms"], 3)
            for name in ("back_to_back", "every_20_ms")
        },
        # A message each way on a long-lived stream against a unary call, over TCP.
        "bidi_message_over_unary_p50": {
            name: round(tcp[f"bidi_message_{name}"]["p50_ms"] / tcp[name]["p50_ms"], 3)
            for name in ("back_to_back", "every_20_ms")
        },
        # The edge's chat call multiplexed against the same call as an RPC of its own (both
        # watching for the client's hang-up), over TCP.
        "multiplexed_over_watched_p50": {
            name: round(tcp[f"multiplexed_{name}"]["p50_ms"] / tcp[f"watched_{name}"]["p50_ms"], 3)
            for name in ("back_to_back", "every_20_ms")
        },
        # The same multiplexed call on the router's call socket against a gRPC stream.
        "call_socket_over_multiplexed_p50": {
            name: round(
                tcp[f"call_socket_{name}"]["p50_ms"] / tcp[f"multiplexed_{name}"]["p50_ms"], 3
            )
            for name in ("back_to_back", "every_20_ms")
        },
        "call_socket_over_multiplexed_cpu": round(
            tcp["cpu_call_socket_every_20_ms"]["total_cpu_ms"]
            / tcp["cpu_multiplexed_every_20_ms"]["total_cpu_ms"],
            3,
        ),
        "multiplexed_over_watched_cpu": round(
            tcp["cpu_multiplexed_every_20_ms"]["total_cpu_ms"]
            / tcp["cpu_watched_every_20_ms"]["total_cpu_ms"],
            3,
        ),
        "bidi_message_over_unary_cpu": round(
            tcp["cpu_bidi_message_every_20_ms"]["total_cpu_ms"]
            / tcp["cpu_unary_every_20_ms"]["total_cpu_ms"],
            3,
        ),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
