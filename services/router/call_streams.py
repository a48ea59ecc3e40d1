"""The router's side of Router.Calls: many chat calls on one long-lived stream.

An edge sends each chat call as a frame on a stream it keeps open, instead of opening a
call of its own for it: half the time and CPU of the gRPC hop (bench/grpc_hop.py). This
module runs each call frame with the same handlers as ChatCompletion and
StreamChatCompletion, so a call is planned, failed over, metered and traced the same way
whichever RPC carried it, and writes the answers back tagged with the call's id. A stream
is either the gRPC method Router.Calls or a connection to the router's call socket
(router/call_socket.py): the same frames, length-prefixed on plain TCP.

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
from aig_common.framing import encode, read_message

log = logging.getLogger("router")

DRAINING = pb.ReplyFrame(draining=pb.Draining())


class ChatHandlers(Protocol):
    """The router's ChatCompletion and StreamChatCompletion, called with no gRPC context
    (they read everything from the request) whichever transport carried the call."""

    def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> Awaitable[pb.ChatResponse]: ...

    def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]: ...


# Sends one batch of replies to the edge: on the gRPC stream or the call socket.
WriteReplies = Callable[[pb.ReplyFrames], Awaitable[None]]


class CallStream:
    """One edge's stream: reads call frames until the edge half-closes it, runs each call
    as a task, and ends once every call has ended."""

    def __init__(self, handlers: ChatHandlers, write: WriteReplies) -> None:
        self._handlers = handlers
        self._write = write
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._replies: asyncio.Queue[pb.ReplyFrame | None] = asyncio.Queue()
        self._draining = False

    def drain(self) -> None:
        """Tells the edge to send no more calls here; those in flight run to their end."""
        if not self._draining:
            self._draining = True
            self._replies.put_nowait(DRAINING)

    async def serve(self, batches: AsyncIterator[pb.CallFrames]) -> None:
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
        reply = await self._handlers.ChatCompletion(request, None)
        self._replies.put_nowait(pb.ReplyFrame(call_id=call_id, chat=reply))

    async def _stream_chat(self, call_id: int, request: pb.ChatRequest) -> None:
        events = self._handlers.StreamChatCompletion(request, None)
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
        write = self._write
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
        """A Router.Calls gRPC stream."""
        # Answering at once commits the stream: from here on, gRPC never sends it again to
        # another router (the edge itself decides what to resend if the stream breaks).
        await context.send_initial_metadata(())
        await self.serve_frames(handlers, batches, context.write)

    async def serve_socket(
        self, handlers: ChatHandlers, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A call socket connection (router/call_socket.py): the same batches, framed."""

        async def batches() -> AsyncIterator[pb.CallFrames]:
            while (batch := await read_message(reader, pb.CallFrames.FromString)) is not None:
                if not batch.frames:
                    return  # the edge's end of stream: its calls here still get answers
                yield batch
            # A process that dies closes its sockets too: only the empty batch tells a
            # half-close from an edge gone, whose calls are cancelled (CallStream.serve).
            raise ConnectionResetError("the edge's call socket closed without ending its stream")

        async def write(batch: pb.ReplyFrames) -> None:
            writer.write(encode(batch))
            await writer.drain()

        try:
            await self.serve_frames(handlers, batches(), write)
        finally:
            writer.close()

    async def serve_frames(
        self, handlers: ChatHandlers, batches: AsyncIterator[pb.CallFrames], write: WriteReplies
    ) -> None:
        stream = CallStream(handlers, write)
        self._open.add(stream)
        if self._draining:
            stream.drain()
        try:
            await stream.serve(batches)
        finally:
            self._open.discard(stream)
