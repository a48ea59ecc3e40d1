"""The router's side of Router.Calls: many chat calls on one long-lived stream.

An edge sends each chat call as a frame on a stream it keeps open, instead of opening a
call of its own for it: half the time and CPU of the gRPC hop (bench/grpc_hop.py). This
module runs each call frame with the same handlers as ChatCompletion and
StreamChatCompletion, so a call is planned, failed over, metered and traced the same way
whichever RPC carried it, and writes the answers back tagged with the call's id. A stream
is either the gRPC method Router.Calls or a connection to the router's call socket
(router/call_socket.py): the same frames, length-prefixed on plain TCP.

Replies go out through a `Replies`: on gRPC one writer task per stream (`QueuedReplies`),
on the call socket straight to the connection (router/call_socket.py).
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
    """The router's ChatCompletion and StreamChatCompletion, called with no gRPC context
    (they read everything from the request) whichever transport carried the call."""

    def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> Awaitable[pb.ChatResponse]: ...

    def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]: ...


class Replies(Protocol):
    """Where a stream's reply frames go: the gRPC stream (`QueuedReplies`) or the call
    socket (router/call_socket.py)."""

    def put(self, frame: pb.ReplyFrame) -> None: ...

    async def finish(self) -> None:
        """Sends every frame put, then ends the stream."""

    def abort(self) -> None:
        """Ends the stream at once (the edge is gone, or the drain's grace ran out)."""


class QueuedReplies:
    """Replies on the gRPC stream, written by one task: gRPC allows one write in flight per
    call, and a call cancelled by its client must never be interrupted half-way through a
    write that other calls share. The writer sends whatever replies are waiting as one
    message (ReplyFrames, `aig_common.batches`), so under load one write carries several
    calls' answers."""

    def __init__(self, write: Callable[[pb.ReplyFrames], Awaitable[None]]) -> None:
        self._queue: asyncio.Queue[pb.ReplyFrame | None] = asyncio.Queue()
        self.put = self._queue.put_nowait
        self._writer = asyncio.create_task(
            write_in_batches(self._queue, lambda frames: write(pb.ReplyFrames(frames=frames)))
        )

    async def finish(self) -> None:
        self._queue.put_nowait(None)
        await self._writer

    def abort(self) -> None:
        self._writer.cancel()
        # Retrieved, so that a write that failed with the stream is not reported as a task
        # exception nobody retrieved.
        self._writer.add_done_callback(lambda task: task.cancelled() or task.exception())


class CallStream:
    """One edge's stream: runs each call frame it is given as a task, and ends once the edge
    has half-closed it and every call has ended."""

    def __init__(self, handlers: ChatHandlers, replies: Replies) -> None:
        self._handlers = handlers
        self._replies = replies
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._draining = False

    def drain(self) -> None:
        """Tells the edge to send no more calls here; those in flight run to their end."""
        if not self._draining:
            self._draining = True
            self._replies.put(DRAINING)

    async def finish(self) -> None:
        """Half-closed by the edge: the calls already read still get their answers."""
        while self._calls:
            await asyncio.wait(list(self._calls.values()))
        await self._replies.finish()

    async def abandon(self) -> None:
        """The edge went away (or the drain's grace ran out): nothing can be answered, so
        each call is cancelled and metered as abandoned, as a call of its own would be."""
        for task in self._calls.values():
            task.cancel()
        if self._calls:
            await asyncio.wait(list(self._calls.values()))
        self._replies.abort()

    def take(self, frame: pb.CallFrame) -> None:
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
        self._replies.put(pb.ReplyFrame(call_id=call_id, chat=reply))

    async def _stream_chat(self, call_id: int, request: pb.ChatRequest) -> None:
        events = self._handlers.StreamChatCompletion(request, None)
        put = self._replies.put
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
            self._replies.put(pb.ReplyFrame(call_id=call_id, failed=failed))


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

    def open(self, handlers: ChatHandlers, replies: Replies) -> CallStream:
        stream = CallStream(handlers, replies)
        self._open.add(stream)
        if self._draining:
            stream.drain()
        return stream

    def closed(self, stream: CallStream) -> None:
        self._open.discard(stream)

    async def serve_until_ended(self, stream: CallStream, ended: Awaitable[bool]) -> None:
        """A stream on a transport of our own (the call socket, or an edge in this process),
        until `ended`: True when the edge half-closed it (the calls already read still get
        their answers), False when the edge went away (they are cancelled and metered as
        abandoned)."""
        try:
            if await ended:
                await stream.finish()
        finally:
            await stream.abandon()
            self.closed(stream)

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
        stream = self.open(handlers, QueuedReplies(context.write))
        try:
            async for batch in batches:
                for frame in batch.frames:
                    stream.take(frame)
            await stream.finish()
        finally:
            await stream.abandon()
            self.closed(stream)


class ServingTasks:
    """The tasks serving one transport's streams (`CallStreams.serve_until_ended`), so that a
    drain can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end(self, grace_s: float | None) -> None:
        """Waits up to `grace_s` for the streams to end, then cancels what is left (its calls
        are metered as abandoned)."""
        if self._tasks and grace_s:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
