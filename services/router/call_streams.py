"""The router's side of Router.Calls: many chat calls on one long-lived stream.

An edge sends each chat call as a frame on a stream it keeps open, instead of opening a
call of its own for it: half the time and CPU of the gRPC hop (bench/grpc_hop.py). This
module runs each call frame with the same handlers as ChatCompletion and
StreamChatCompletion, so a call is planned, failed over, metered and traced the same way
whichever RPC carried it, and writes the answers back tagged with the call's id.

Every reply goes through one writer task per stream: gRPC allows one write in flight per
call, and a call cancelled by its client must never be interrupted half-way through a
write that other calls share. The writer sends whatever replies are waiting as one
message (ReplyFrames, `aig_common.batches`), so under load one write carries several
calls' answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import grpc

from aig.router.v1 import router_pb2 as pb
from aig_common.batches import write_in_batches

log = logging.getLogger("router")

DRAINING = pb.ReplyFrame(draining=pb.Draining())


class ChatHandlers(Protocol):
    def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> Awaitable[pb.ChatResponse]: ...

    def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatStreamEvent]: ...


class CallStream:
    """One edge's stream: reads call frames until the edge half-closes it, runs each call
    as a task, and ends once every call has ended."""

    def __init__(self, handlers: ChatHandlers, context: grpc.aio.ServicerContext) -> None:
        self._handlers = handlers
        self._context = context
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._replies: asyncio.Queue[pb.ReplyFrame | None] = asyncio.Queue()
        self._draining = False

    def drain(self) -> None:
        """Tells the edge to send no more calls here; those in flight run to their end."""
        if not self._draining:
            self._draining = True
            self._replies.put_nowait(DRAINING)

    async def serve(self, batches: AsyncIterator[pb.CallFrames]) -> None:
        # Answering at once commits the stream: from here on, gRPC never sends it again to
        # another router (the edge itself decides what to resend if the stream breaks).
        await self._context.send_initial_metadata(())
        writer = asyncio.create_task(self._write_replies())
        try:
            async for batch in batches:
                for frame in batch.frames:
                    self._take(frame)
            # Half-closed by the edge: the calls already read still get their answers.
            while self._calls:
                await asyncio.wait(list(self._calls.values()))
            self._replies.put_nowait(None)
            await writer
        finally:
            # The edge went away (or the drain's grace ran out): nothing can be answered, so
            # each call is cancelled and metered as abandoned, as a call of its own would be.
            for task in self._calls.values():
                task.cancel()
            if self._calls:
                await asyncio.wait(list(self._calls.values()))
            writer.cancel()
            # Collected, so that a write that failed with the stream is not reported as a
            # task exception nobody retrieved.
            await asyncio.gather(writer, return_exceptions=True)

    def _take(self, frame: pb.CallFrame) -> None:
        kind = frame.WhichOneof("frame")
        call_id = frame.call_id
        if kind == "cancel":
            task = self._calls.get(call_id)
            if task is not None:
                task.cancel()
            return
        if call_id in self._calls:
            log.warning("call id %d already in flight on this stream; frame ignored", call_id)
            return
        if kind == "chat":
            task = asyncio.create_task(self._answer(call_id, self._chat, frame.chat))
        elif kind == "stream_chat":
            task = asyncio.create_task(self._answer(call_id, self._stream_chat, frame.stream_chat))
        else:
            log.warning("unknown call frame %r ignored", kind)
            return
        self._calls[call_id] = task
        task.add_done_callback(lambda _: self._calls.pop(call_id, None))

    async def _chat(self, call_id: int, request: pb.ChatRequest) -> None:
        reply = await self._handlers.ChatCompletion(request, self._context)
        self._replies.put_nowait(pb.ReplyFrame(call_id=call_id, chat=reply))

    async def _stream_chat(self, call_id: int, request: pb.ChatRequest) -> None:
        events = self._handlers.StreamChatCompletion(request, self._context)
        put = self._replies.put_nowait
        async for event in events:
            put(pb.ReplyFrame(call_id=call_id, event=event))

    async def _answer(
        self,
        call_id: int,
        run: Callable[[int, pb.ChatRequest], Awaitable[None]],
        request: pb.ChatRequest,
    ) -> None:
        try:
            await run(call_id, request)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The handlers answer every failure they know of; this is a fault in the router.
            log.exception("call %d failed in the router", call_id)
            failed = pb.CallFailed(code=grpc.StatusCode.UNKNOWN.value[0], details="router fault")
            self._replies.put_nowait(pb.ReplyFrame(call_id=call_id, failed=failed))

    async def _write_replies(self) -> None:
        write = self._context.write
        await write_in_batches(self._replies, lambda frames: write(pb.ReplyFrames(frames=frames)))


class CallStreams:
    """Every open call stream of one router, so that a drain reaches them all."""

    def __init__(self) -> None:
        self._open: set[CallStream] = set()
        self._draining = False

    def drain(self) -> None:
        """Tells every stream, open or opened from now on, to take no new calls."""
        self._draining = True
        for stream in self._open:
            stream.drain()

    async def serve(
        self,
        handlers: ChatHandlers,
        batches: AsyncIterator[pb.CallFrames],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = CallStream(handlers, context)
        self._open.add(stream)
        if self._draining:
            stream.drain()
        try:
            await stream.serve(batches)
        finally:
            self._open.discard(stream)
