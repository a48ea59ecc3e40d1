"""Chat calls multiplexed on Router.Calls streams (edge/router_streams.py against the
router's router/call_streams.py), over both transports on loopback (real gRPC streams, and
the call socket: edge/call_socket.py against router/call_socket.py): each call gets its
own answer, a cancelled call is cancelled at the router and no other, a draining router
loses no call, and a call no router answered is sent again when its router goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import grpc
import orjson
import pytest
from starlette.requests import Request

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common import framing
from aig_common.contracts import GRPC_CLIENT_OPTIONS
from aig_common.framing import MessageBuffer, encode
from controldb.money import Admission
from devstack.processes import free_port
from edge.admission import Admissions
from edge.call_socket import END_OF_CALLS, CallSockets
from edge.router_calls import RouterCalls, RouterLink
from edge.router_streams import CallChannel, GrpcCallChannel, RouterStreams, UnaryCall
from router.call_socket import CallSocketServer
from router.call_streams import CallStreams


class Servicer(pb_grpc.RouterServicer):
    """Answers a chat body {"delay": s, "chunks": n} after `delay` seconds with its own
    request id and the port it serves on, so a test sees who answered what."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stall_s = 0.0  # added to every call's delay
        self.call_streams = CallStreams()
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def _work(self, request: pb.ChatRequest) -> dict[str, object]:
        rid = request.context.request_id
        self.started.append(rid)
        body = orjson.loads(request.body)
        try:
            await asyncio.sleep(body.get("delay", 0) + self.stall_s)
        except asyncio.CancelledError:
            self.cancelled.append(rid)
            raise
        self.finished.append(rid)
        return {"request_id": rid, "port": self.port, "pad": "x" * body.get("pad", 0)}

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> pb.ChatResponse:
        answer = await self._work(request)
        return pb.ChatResponse(completion=orjson.dumps(answer), provider="test")

    async def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]:
        answer = await self._work(request)
        for index in range(orjson.loads(request.body).get("chunks", 1)):
            chunk = orjson.dumps({**answer, "index": index})
            yield pb.ChatStreamEvent(chunk=chunk)
            await asyncio.sleep(0)
        yield pb.ChatStreamEvent(end=pb.StreamEnd(provider="test"))

    async def Calls(
        self, request_iterator: AsyncIterator[pb.CallFrames], context: grpc.aio.ServicerContext
    ) -> None:
        await self.call_streams.serve(self, request_iterator, context)


@dataclass
class Router:
    servicer: Servicer
    server: grpc.aio.Server
    address: str
    call_socket: CallSocketServer

    async def drain(self, grace_s: float) -> None:
        """What the router's main does on SIGTERM."""
        stopping = asyncio.gather(
            self.server.stop(grace=grace_s), self.call_socket.stop(grace_s=grace_s)
        )
        self.servicer.call_streams.drain()
        await stopping

    async def stop(self) -> None:
        """Goes away at once: every stream breaks with the calls on it."""
        await asyncio.gather(self.server.stop(grace=None), self.call_socket.stop(grace_s=None))


@dataclass
class Routers:
    transport: str
    running: list[Router] = field(default_factory=list)

    async def start(self, port: int | None = None) -> Router:
        port = port or free_port()
        servicer = Servicer(port)
        server = grpc.aio.server()
        pb_grpc.add_RouterServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        call_socket = CallSocketServer(servicer.call_streams, servicer)
        await call_socket.start("127.0.0.1", 0)
        router = Router(servicer, server, f"127.0.0.1:{port}", call_socket)
        self.running.append(router)
        return router


@pytest.fixture(params=["grpc", "socket"])
async def routers(request: pytest.FixtureRequest) -> AsyncIterator[Routers]:
    started = Routers(request.param)
    yield started
    for router in started.running:
        await router.stop()


async def _until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Polls `condition` (the servicer's lists, changed by gRPC's tasks) for a while."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


def _request(rid: str, **body: object) -> pb.ChatRequest:
    return pb.ChatRequest(context=pb.CallContext(request_id=rid), body=orjson.dumps(body))


def _edge(
    transport: str, *routers: Router, width: int = 2, calls_per_stream: int = 64
) -> tuple[grpc.aio.Channel, RouterStreams]:
    """The edge's channel to the routers, and its streams on the transport under test."""
    target = "ipv4:" + ",".join(r.address for r in routers)
    channel = grpc.aio.insecure_channel(target, options=GRPC_CLIENT_OPTIONS)
    open_channel: Callable[[], CallChannel]
    if transport == "grpc":
        open_channel = partial(GrpcCallChannel, pb_grpc.RouterStub(channel))
    else:
        sockets = "ipv4:" + ",".join(f"127.0.0.1:{r.call_socket.port}" for r in routers)
        open_channel = CallSockets(sockets).open
    return channel, RouterStreams(open_channel, width=width, calls_per_stream=calls_per_stream)


async def _answer(streams: RouterStreams, rid: str, **body: object) -> dict[str, object]:
    reply = await streams.chat(_request(rid, **body))
    answer: dict[str, object] = orjson.loads(reply.completion)
    return answer


async def _streamed(streams: RouterStreams, rid: str, **body: object) -> list[dict[str, object]]:
    chunks = []
    async for event in streams.stream_chat(_request(rid, **body)):
        if event.WhichOneof("event") == "chunk":
            chunks.append(orjson.loads(event.chunk))
        else:
            assert event.WhichOneof("event") == "end"
    return chunks


async def test_concurrent_calls_on_shared_streams_each_get_their_own_answer(
    routers: Routers,
) -> None:
    a, b = await routers.start(), await routers.start()
    channel, streams = _edge(routers.transport, a, b, width=2, calls_per_stream=8)
    answers: list[dict[str, object]] = []
    streamed: list[list[dict[str, object]]] = []
    async with channel:
        for wave in range(6):  # in waves, so streams retire and their successors move on
            ids = range(wave * 10, wave * 10 + 10)
            unary = [_answer(streams, f"u{i}", delay=(i % 7) / 100) for i in ids]
            chunked = [_streamed(streams, f"s{i}", delay=(i % 5) / 100, chunks=3) for i in ids]
            answers += await asyncio.gather(*unary)
            streamed += await asyncio.gather(*chunked)
        streams.close()
    assert [answer["request_id"] for answer in answers] == [f"u{i}" for i in range(60)]
    for i, chunks in enumerate(streamed):
        assert [(c["request_id"], c["index"]) for c in chunks] == [(f"s{i}", n) for n in range(3)]
    # Streams retire and reopen on a round-robin channel: both routers served calls.
    assert {answer["port"] for answer in answers} == {a.servicer.port, b.servicer.port}


async def test_a_cancelled_call_is_cancelled_at_the_router_and_no_other(routers: Routers) -> None:
    router = await routers.start()
    channel, streams = _edge(routers.transport, router, width=1)
    async with channel:
        slow = streams.chat(_request("leaves", delay=30))
        kept = asyncio.ensure_future(_answer(streams, "stays", delay=0.2))
        streamed = streams.stream_chat(_request("leaves-stream", delay=30))
        await _until(lambda: len(router.servicer.started) == 3)
        assert slow.cancel() and streamed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        with pytest.raises(asyncio.CancelledError):
            await streamed.__anext__()
        assert (await kept)["request_id"] == "stays"
        await _until(lambda: len(router.servicer.cancelled) == 2)
        streams.close()
    assert sorted(router.servicer.cancelled) == ["leaves", "leaves-stream"]
    assert router.servicer.finished == ["stays"]


async def test_a_draining_router_finishes_its_calls_and_new_calls_go_elsewhere(
    routers: Routers,
) -> None:
    a, b = await routers.start(), await routers.start()
    channel, streams = _edge(routers.transport, a, b, width=2)
    async with channel:
        # Warm both streams up, then leave a slow call on each router.
        await asyncio.gather(*(_answer(streams, f"warm{i}") for i in range(4)))
        slow = [asyncio.ensure_future(_answer(streams, f"slow{i}", delay=0.5)) for i in range(2)]
        await _until(lambda: len(a.servicer.started) + len(b.servicer.started) == 6)
        draining = asyncio.create_task(a.drain(grace_s=20))
        await asyncio.sleep(0.05)
        after = await asyncio.gather(*(_answer(streams, f"after{i}") for i in range(20)))
        finished = await asyncio.gather(*slow)
        # The edge half-closed a's stream once its call ended: the drain did not need the
        # grace period.
        await asyncio.wait_for(draining, timeout=5)
        streams.close()
    assert {answer["port"] for answer in after} == {b.servicer.port}
    assert sorted(str(answer["request_id"]) for answer in finished) == ["slow0", "slow1"]
    assert not a.servicer.cancelled and not b.servicer.cancelled


async def test_a_call_no_router_answered_is_sent_again_when_its_router_goes_away(
    routers: Routers,
) -> None:
    a, b = await routers.start(), await routers.start()
    a.servicer.stall_s = 30  # a takes calls and never answers them
    channel, streams = _edge(routers.transport, a, b, width=2, calls_per_stream=2)
    async with channel:
        pending: list[asyncio.Future[dict[str, object]]] = []
        for _ in range(200):  # streams rotate until one is on a
            pending.append(asyncio.ensure_future(_answer(streams, f"p{len(pending)}")))
            await asyncio.sleep(0.02)
            if a.servicer.started:
                break
        # a goes away with calls it took and never answered.
        await a.stop()
        answers = await asyncio.gather(*pending, return_exceptions=True)
        streams.close()
    served = [answer for answer in answers if isinstance(answer, dict)]
    assert len(served) == len(answers), answers
    assert {answer["port"] for answer in served} == {b.servicer.port}
    assert a.servicer.started and a.servicer.cancelled


class _ConnectedClient:
    """An ASGI request whose client stays connected, from a server without the edge's hang-up
    extension (so the edge watches `receive()` for the disconnect)."""

    def __init__(self) -> None:
        self.receive = asyncio.Event().wait
        self.scope: dict[str, object] = {}


@pytest.mark.parametrize("width", [0, 2], ids=["a call of its own", "multiplexed"])
async def test_the_edge_answers_the_same_either_way(routers: Routers, width: int) -> None:
    """AIG_ROUTER_CALL_STREAMS=0 sends each chat call as an RPC of its own, otherwise on the
    streams: RouterCalls gives the ingresses the same answers in both cases."""
    router = await routers.start()
    channel, streams = _edge(routers.transport, router, width=max(width, 1))
    async with channel:
        calls = RouterCalls(cast(Admissions, None))
        calls.connect(RouterLink(pb_grpc.RouterStub(channel), streams if width else None))
        admission = cast(Admission, None)
        request = cast(Request, _ConnectedClient())
        reply = await calls.complete(_request("one"), admission, request)
        opened = await calls.open_stream(_request("two", chunks=2), admission)
        rest = [event async for event in opened.rest]
        opened.call.cancel()
        streams.close()
    assert orjson.loads(reply.completion)["request_id"] == "one"
    assert opened.headers == {}  # this servicer sends no StreamStart
    assert orjson.loads(opened.first.chunk)["index"] == 0
    assert [event.WhichOneof("event") for event in rest] == ["chunk", "end"]
    assert router.servicer.finished == ["one", "two"]
    assert not router.servicer.cancelled


async def test_a_reply_racing_the_cancel_of_its_waiting_task_is_dropped() -> None:
    """Task.cancel() cancels the awaited future at once; the call's own cancel runs a loop
    turn later. A reply read in between must not break the stream's reader."""
    streams = RouterStreams(cast(Callable[[], CallChannel], None))
    call = UnaryCall(streams, pb.CallFrame(chat=_request("raced")))
    waiting = asyncio.ensure_future(_await(call))
    await asyncio.sleep(0)
    waiting.cancel()
    reply = pb.ReplyFrame(call_id=1, chat=pb.ChatResponse(completion=b"{}"))
    assert call.deliver(reply)  # ends the call, and does not raise
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def _await(call: UnaryCall) -> pb.ChatResponse:
    return await call


@pytest.mark.parametrize("ended", [True, False], ids=["half-closed", "gone"])
async def test_a_call_socket_tells_a_half_close_from_an_edge_gone(ended: bool) -> None:
    """A dead process's socket closes like any other: only the empty batch that ends the
    edge's side lets the router answer what it read. Without it, the calls are cancelled
    (and metered as abandoned), as gRPC cancels a stream whose edge went away."""
    routers = Routers("socket")
    router = await routers.start()
    try:
        await _exchange_on_a_bare_socket(router, ended)
    finally:
        await router.stop()


async def _exchange_on_a_bare_socket(router: Router, ended: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", router.call_socket.port)
    call = pb.CallFrame(call_id=7, chat=_request("last", delay=0.2))
    writer.write(encode(pb.CallFrames(frames=[call])))
    if ended:
        writer.write(END_OF_CALLS)
    writer.write_eof()
    replies: list[pb.ReplyFrame] = []
    for message in MessageBuffer().feed(await reader.read()):  # all of it, to the router's close
        replies += pb.ReplyFrames.FromString(message).frames
    writer.close()
    if ended:
        assert [(r.call_id, orjson.loads(r.chat.completion)["request_id"]) for r in replies] == [
            (7, "last")
        ]
        assert router.servicer.finished == ["last"]
    else:
        assert replies == []
        await _until(lambda: router.servicer.cancelled == ["last"])
        assert router.servicer.finished == []


async def test_a_reply_over_the_message_limit_fails_its_call_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On gRPC a message over the limit fails its call with RESOURCE_EXHAUSTED; on the call
    socket too, even when it was to share one message with other calls' replies."""
    monkeypatch.setattr(framing, "MAX_MESSAGE_BYTES", 4096)
    routers = Routers("socket")
    router = await routers.start()
    channel, streams = _edge("socket", router, width=1)
    try:
        async with channel:
            small, large = await asyncio.wait_for(
                asyncio.gather(
                    _answer(streams, "small", delay=0.05),
                    _answer(streams, "large", delay=0.05, pad=8192),
                    return_exceptions=True,
                ),
                timeout=10,  # a reply lost with its stream would leave the call waiting
            )
            after = await _answer(streams, "after")
            streams.close()
    finally:
        await router.stop()
    assert isinstance(small, dict) and small["request_id"] == "small"
    assert isinstance(large, grpc.aio.AioRpcError)
    assert large.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert after["request_id"] == "after"


class _RecordingChannel:
    """A CallChannel that keeps what it is sent; replies are handed in by the test."""

    def __init__(self, opened: list[_RecordingChannel]) -> None:
        self.sent: list[int] = []
        self.ended = False
        self.replies: Callable[[pb.ReplyFrames], None] | None = None
        opened.append(self)

    def start(self, on_replies: Callable[[pb.ReplyFrames], None], on_broken: object) -> None:
        self.replies = on_replies

    def send(self, frame: pb.CallFrame) -> None:
        self.sent.append(frame.call_id)

    def end(self) -> None:
        self.ended = True

    def cancel(self) -> None:
        pass


@pytest.mark.parametrize("spent_by", ["calls", "age"])
async def test_a_spent_stream_is_replaced_before_any_call_waits_for_the_replacement(
    spent_by: str,
) -> None:
    """The call that spends a stream still goes on it (its connection is open) and the
    replacement is opened at once, so the next call finds it connecting or connected
    instead of opening it and waiting for the connection to be made."""
    opened: list[_RecordingChannel] = []
    streams = RouterStreams(
        lambda: _RecordingChannel(opened),
        width=1,
        calls_per_stream=2 if spent_by == "calls" else 1_000,
        max_age_s=5.0 if spent_by == "calls" else 0.05,
    )
    first = streams.chat(_request("first"))
    if spent_by == "age":
        await asyncio.sleep(0.1)
    second = streams.chat(_request("second"))
    assert [channel.sent for channel in opened] == [[1, 2], []]
    third = streams.chat(_request("third"))
    assert [channel.sent for channel in opened] == [[1, 2], [3]]
    # The spent stream is half-closed once its calls are answered, not before.
    assert not opened[0].ended
    answer = pb.ChatResponse(completion=b"{}")
    assert opened[0].replies is not None and opened[1].replies is not None
    opened[0].replies(pb.ReplyFrames(frames=[pb.ReplyFrame(call_id=1, chat=answer)]))
    assert not opened[0].ended
    opened[0].replies(pb.ReplyFrames(frames=[pb.ReplyFrame(call_id=2, chat=answer)]))
    assert opened[0].ended and not opened[1].ended
    opened[1].replies(pb.ReplyFrames(frames=[pb.ReplyFrame(call_id=3, chat=answer)]))
    assert [await call for call in (first, second, third)] == [answer] * 3
    streams.close()
