"""A unary call's usage event is made after its reply has gone on its way
(router/call_streams.after_reply): one loop turn after the reply is put, so the call socket
writes it first; in the context the handler left it in (its trace span); and even if the
call is cancelled in that turn. Outside a call stream (a gRPC call of its own) it is made at
once."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

import grpc

from aig.router.v1 import router_pb2 as pb
from router.call_streams import CallStream, after_reply

SPAN: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")


class Handlers:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> pb.ChatResponse:
        SPAN.set(f"span of {request.context.request_id}")
        after_reply(lambda: self.log.append(f"metered in {SPAN.get()}"))
        SPAN.set("another span")
        return pb.ChatResponse(provider="test")

    async def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]:
        raise NotImplementedError  # only unary calls meter after their reply
        yield pb.ChatStreamEvent()


class Replies:
    """Writes each reply at the end of the loop turn it was put in, as the call socket does."""

    def __init__(self, log: list[str], cancel_on_put: CallStream | None = None) -> None:
        self.log = log
        self.stream = cancel_on_put

    def put(self, frame: pb.ReplyFrame) -> None:
        self.log.append(f"reply {frame.call_id} put")
        asyncio.get_running_loop().call_soon(self.log.append, f"reply {frame.call_id} written")
        if self.stream is not None:
            self.stream.take(pb.CallFrame(call_id=frame.call_id, cancel=pb.CancelCall()))

    async def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _frame(call_id: int) -> pb.CallFrame:
    request = pb.ChatRequest(context=pb.CallContext(request_id=f"call-{call_id}"))
    return pb.CallFrame(call_id=call_id, chat=request)


async def test_the_usage_event_follows_the_written_reply_in_the_calls_own_context() -> None:
    log: list[str] = []
    stream = CallStream(Handlers(log), Replies(log))
    stream.take(_frame(1))
    await stream.finish()
    assert log == ["reply 1 put", "reply 1 written", "metered in span of call-1"]


async def test_a_call_cancelled_after_its_reply_is_still_metered() -> None:
    log: list[str] = []
    replies = Replies(log)
    stream = CallStream(Handlers(log), replies)
    replies.stream = stream  # the edge cancels the call as its reply is put
    stream.take(_frame(2))
    await stream.finish()
    assert log == ["reply 2 put", "reply 2 written", "metered in span of call-2"]


async def test_outside_a_call_stream_the_work_runs_at_once() -> None:
    log: list[str] = []
    await Handlers(log).ChatCompletion(_frame(3).chat, None)
    assert log == ["metered in span of call-3"]
