"""The edge's chat calls to the routers, multiplexed on a few long-lived Router.Calls streams.

A gRPC call of its own costs the edge and the router about twice the time and CPU of one
message each way on a stream that is already open (bench/grpc_hop.py), so every chat call
travels as a frame on one of `width` open streams instead (router.proto, Router.Calls);
frames waiting while a write is in flight go together in the next one. A stream is a
`CallChannel`: by default a connection to a router's call socket (edge/call_socket.py: the
same frames on plain TCP, about half the cost again), else a gRPC stream (`GrpcCallChannel`).
What gRPC does for a call of its own is done here for the calls on a stream:

- **Spreading over the routers.** Each new stream goes to the next router that is ready
  (the gRPC channel's round robin, or `CallSockets`' turn); calls go round robin over the
  open streams, and a stream retires after `calls_per_stream` calls or `max_age_s`
  seconds, so its replacement lands on the next router. That matters: streams opened while
  only one router was connected (an edge's first calls, a router just restarted) would
  otherwise all stay on that one. Opening a stream costs about one call of its own, so
  rotating every 64 calls costs ~2 %. The replacement is opened as its predecessor
  retires, so it is connected by the time a call is sent on it.
- **A router's drain.** A draining router says so on each stream: no new call goes there,
  and the stream is half-closed once its calls have ended.
- **Calls no router took.** If a stream breaks (UNAVAILABLE: the router went away), a call
  that has had no reply frame is sent again on another stream, up to `MAX_ATTEMPTS` in all,
  as gRPC's retry policy does for a call of its own (aig_common/contracts.py); any other
  call fails with the stream's status.

A call is answered with the same objects as a call of its own: `await` a `UnaryCall` for a
ChatResponse, iterate a `StreamCall` for ChatStreamEvents; a failure raises
`grpc.aio.AioRpcError`, and `cancel()` cancels the call at the router.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Protocol

import grpc

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common.batches import write_in_batches

log = logging.getLogger("edge")

MAX_ATTEMPTS = 3
_NO_METADATA = grpc.aio.Metadata()


def unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, _NO_METADATA, _NO_METADATA, details, debug_error_string=""
    )


class _Call:
    """A call on a stream: its request frame (kept to send again) and where replies go."""

    def __init__(self, streams: RouterStreams, frame: pb.CallFrame) -> None:
        self._streams = streams
        self.frame = frame
        self.stream: _Stream | None = None
        self.attempts = 0
        self.replied = False
        self.done = False

    def send(self) -> None:
        self.attempts += 1
        self._streams.send(self)

    def deliver(self, frame: pb.ReplyFrame) -> bool:
        """Takes a reply frame; True when it ends the call."""
        raise NotImplementedError

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        raise NotImplementedError

    def lost(self, error: grpc.aio.AioRpcError) -> None:
        """The stream broke: a call no router answered yet is sent again, else it fails."""
        if self.done:
            return
        if (
            error.code() == grpc.StatusCode.UNAVAILABLE
            and not self.replied
            and self.attempts < MAX_ATTEMPTS
            and not self._streams.closed
        ):
            self.send()
            return
        self.fail(error)

    def cancel(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self.stream is not None:
            self.stream.cancel(self)
        return True


def _failed(frame: pb.ReplyFrame) -> grpc.aio.AioRpcError:
    code = next((c for c in grpc.StatusCode if c.value[0] == frame.failed.code), None)
    return grpc.aio.AioRpcError(
        code or grpc.StatusCode.UNKNOWN,
        _NO_METADATA,
        _NO_METADATA,
        frame.failed.details,
        debug_error_string="",
    )


class UnaryCall(_Call):
    """A chat call answered by one ChatResponse: await it."""

    def __init__(self, streams: RouterStreams, frame: pb.CallFrame) -> None:
        super().__init__(streams, frame)
        self._reply: asyncio.Future[pb.ChatResponse] = asyncio.get_running_loop().create_future()

    def deliver(self, frame: pb.ReplyFrame) -> bool:
        self.replied = self.done = True
        if self._reply.done():
            # Cancelled with its waiting task, which has yet to run and send the cancel.
            return True
        if frame.WhichOneof("frame") == "chat":
            self._reply.set_result(frame.chat)
        else:
            self._reply.set_exception(_failed(frame))
        return True

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        self.done = True
        if not self._reply.done():
            self._reply.set_exception(error)

    def cancel(self) -> bool:
        self._reply.cancel()
        return super().cancel()

    def __await__(self) -> Generator[Any, None, pb.ChatResponse]:
        try:
            return (yield from self._reply.__await__())
        except asyncio.CancelledError:
            # The waiting task was cancelled: so is the call at the router.
            self.cancel()
            raise


class StreamCall(_Call):
    """A streamed chat call: iterate it for its ChatStreamEvents, which end with `end` or
    `error` (the iteration stops after that event)."""

    def __init__(self, streams: RouterStreams, frame: pb.CallFrame) -> None:
        super().__init__(streams, frame)
        self._events: deque[pb.ChatStreamEvent | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def deliver(self, frame: pb.ReplyFrame) -> bool:
        self.replied = True
        if frame.WhichOneof("frame") == "event":
            event = frame.event
            self._events.append(event)
            ended = event.WhichOneof("event") in ("end", "error")
        else:
            self._events.append(_failed(frame))
            ended = True
        self.done = ended
        self._wake()
        return ended

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        self.done = True
        self._events.append(error)
        self._wake()

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._events.append(asyncio.CancelledError())
            self._wake()
        return cancelled

    def __aiter__(self) -> StreamCall:
        return self

    async def __anext__(self) -> pb.ChatStreamEvent:
        while not self._events:
            # Nothing follows the item that ends a call (done is set as it is queued).
            if self.done:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                self._waiter = None
        item = self._events.popleft()
        if isinstance(item, BaseException):
            raise item
        return item


# What a channel tells its stream: a batch of reply frames, or that it broke (once, last).
OnReplies = Callable[[pb.ReplyFrames], None]
OnBroken = Callable[[grpc.aio.AioRpcError], None]


class CallChannel(Protocol):
    """One Router.Calls stream as the edge uses it: on gRPC (`GrpcCallChannel`) or on a
    router's call socket (edge/call_socket.py). Frames are sent in order; replies arrive
    through `on_replies`, and `on_broken` is called once when the stream ends, with
    UNAVAILABLE when the router ended it or went away."""

    def start(self, on_replies: OnReplies, on_broken: OnBroken) -> None: ...

    def send(self, frame: pb.CallFrame) -> None: ...

    def end(self) -> None:
        """Half-closes the stream after what was sent: the router answers, then ends it."""

    def cancel(self) -> None: ...


class GrpcCallChannel:
    """Router.Calls as a gRPC stream on the edge's channel to the routers: a writer task
    sends frames in order (gRPC allows one write in flight; what waits behind a write goes
    in the next, `aig_common.batches`), a reader task hands on the replies."""

    def __init__(self, router: pb_grpc.RouterStub) -> None:
        self._rpc: grpc.aio.StreamStreamCall[pb.CallFrames, pb.ReplyFrames] = router.Calls()
        self._outbox: asyncio.Queue[pb.CallFrame | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    def start(self, on_replies: OnReplies, on_broken: OnBroken) -> None:
        self._writer = asyncio.create_task(self._write())
        self._reader = asyncio.create_task(self._read(on_replies, on_broken))

    def send(self, frame: pb.CallFrame) -> None:
        self._outbox.put_nowait(frame)

    def end(self) -> None:
        self._outbox.put_nowait(None)

    async def _write(self) -> None:
        rpc = self._rpc
        try:
            await write_in_batches(
                self._outbox, lambda frames: rpc.write(pb.CallFrames(frames=frames))
            )
            await rpc.done_writing()
        except Exception as exc:
            # The stream failed: its reader sees the same failure.
            log.debug("router call stream write failed: %r", exc)

    async def _read(self, on_replies: OnReplies, on_broken: OnBroken) -> None:
        error = unavailable("the router's call stream ended")
        try:
            # Anything but a batch is grpc.aio.EOF: the router ended the stream.
            while isinstance(batch := await self._rpc.read(), pb.ReplyFrames):
                on_replies(batch)
        except grpc.aio.AioRpcError as exc:
            error = exc
        finally:
            if self._writer is not None:
                self._writer.cancel()
            on_broken(error)

    def cancel(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
        self._rpc.cancel()


class _Stream:
    """One open Router.Calls stream: the calls sent on it, by call id."""

    def __init__(self, streams: RouterStreams, channel: CallChannel) -> None:
        self._streams = streams
        self._channel = channel
        self.calls: dict[int, _Call] = {}
        self.accepting = True
        self.sent = 0
        self.opened_at = asyncio.get_running_loop().time()
        self._closed = False
        self._broken = False
        channel.start(self._received, self._lost)

    def send(self, call: _Call) -> None:
        call_id = self._streams.next_id()
        call.frame.call_id = call_id
        call.stream = self
        self.calls[call_id] = call
        self.sent += 1
        self._channel.send(call.frame)

    def cancel(self, call: _Call) -> None:
        call_id = call.frame.call_id
        if self.calls.pop(call_id, None) is not None and not self._closed:
            self._channel.send(pb.CallFrame(call_id=call_id, cancel=pb.CancelCall()))
        self._close_when_idle()

    def retire(self) -> None:
        """No new calls here; half-closed once the calls on it have ended."""
        if self.accepting:
            self.accepting = False
            self._streams.retired(self)
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if not self.accepting and not self.calls and not self._closed:
            self._closed = True
            self._channel.end()

    def _received(self, batch: pb.ReplyFrames) -> None:
        for frame in batch.frames:
            if frame.call_id == 0 and frame.WhichOneof("frame") == "draining":
                self.retire()
                continue
            call = self.calls.get(frame.call_id)
            if call is not None and call.deliver(frame):
                del self.calls[frame.call_id]
                self._close_when_idle()

    def _lost(self, error: grpc.aio.AioRpcError) -> None:
        """The stream ended: every call still on it is sent again or fails (`_Call.lost`)."""
        if self._broken:
            return
        self._broken = True
        self.accepting = False
        self._closed = True
        lost, self.calls = list(self.calls.values()), {}
        self._streams.ended(self)
        for call in lost:
            call.lost(error)

    def close(self) -> None:
        self._lost(unavailable("the edge is shutting down"))
        self._channel.cancel()


class RouterStreams:
    """The edge's open Router.Calls streams, and the calls sent on them."""

    def __init__(
        self,
        open_channel: Callable[[], CallChannel],
        width: int = 4,
        calls_per_stream: int = 64,
        max_age_s: float = 5.0,
    ) -> None:
        self._open_channel = open_channel
        self._width = width
        self._calls_per_stream = calls_per_stream
        self._max_age_s = max_age_s
        self._open: list[_Stream] = []
        self._all: set[_Stream] = set()
        self._turn = 0
        self._ids = itertools.count(1)
        self.closed = False

    def next_id(self) -> int:
        return next(self._ids)

    def chat(self, request: pb.ChatRequest) -> UnaryCall:
        call = UnaryCall(self, pb.CallFrame(chat=request))
        call.send()
        return call

    def stream_chat(self, request: pb.ChatRequest) -> StreamCall:
        call = StreamCall(self, pb.CallFrame(stream_chat=request))
        call.send()
        return call

    def send(self, call: _Call) -> None:
        """Sends `call` on the next open stream, and rotates that stream out once it is
        spent."""
        stream = self._pick()
        stream.send(call)
        if stream.accepting and (
            stream.sent >= self._calls_per_stream
            or stream.opened_at + self._max_age_s < asyncio.get_running_loop().time()
        ):
            self._replace(stream)

    def _pick(self) -> _Stream:
        if self.closed:
            raise unavailable("the edge is shutting down")
        if len(self._open) < self._width:
            return self._opened()
        self._turn = (self._turn + 1) % len(self._open)
        return self._open[self._turn]

    def _opened(self) -> _Stream:
        stream = self._new_stream()
        self._open.append(stream)
        return stream

    def _new_stream(self) -> _Stream:
        stream = _Stream(self, self._open_channel())
        self._all.add(stream)
        return stream

    def _replace(self, spent: _Stream) -> None:
        """Retires `spent` and opens its replacement at once, on the next router in turn.
        The call that spent it went out on its open connection, and the replacement
        connects while nothing waits for it: no call waits for a connection to be made,
        unless every stream broke or a router drained (a drain cannot open replacements
        itself: a router that accepts and says it drains would be reconnected to in a
        loop; here only a call opens one)."""
        # The replacement takes the spent stream's turn in the round robin.
        self._open[self._open.index(spent)] = self._new_stream()
        spent.retire()

    def retired(self, stream: _Stream) -> None:
        if stream in self._open:
            self._open.remove(stream)

    def ended(self, stream: _Stream) -> None:
        self.retired(stream)
        self._all.discard(stream)

    def close(self) -> None:
        """Cancels every stream and the calls on them (the edge is shutting down)."""
        self.closed = True
        for stream in list(self._all):
            stream.close()
        self._open.clear()
        self._all.clear()
