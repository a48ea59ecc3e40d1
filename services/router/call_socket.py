"""The router's call socket: Router.Calls without gRPC.

An edge's chat calls travel as CallFrames / ReplyFrames batches (router.proto), each
length-prefixed on a plain TCP connection (`aig_common.framing`); a connection is one
stream, served by the same `CallStreams` as the gRPC method. On this machine that exchange
costs about half the time and CPU of the same frames on a grpc.aio stream
(bench/grpc_hop.py), which spends most of it in its own write path and poller threads.

A connection is an asyncio.Protocol: frames are parsed as the bytes arrive and replies
are written as they are put, so no reader or writer task is woken per message. Replies
put in one turn of the event loop go out as one ReplyFrames, one send.

The edge ends its side with an empty CallFrames: the router answers every call it read,
then closes. A connection that closes without it belongs to an edge that went away (a
dead process's sockets close too), and its calls are cancelled and metered as abandoned.

Listening stops at once on a drain, so a new connection goes to another router; the
streams open here are told to take no new call, and each ends once the edge has
half-closed it and its calls are answered. Whatever is still open when the grace runs out
is cancelled, its calls metered as abandoned, as on the gRPC stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import grpc

from aig.router.v1 import router_pb2 as pb
from aig_common.batches import Cork
from aig_common.framing import FrameTooLarge, MessageBuffer, encode

from .call_streams import CallStream, CallStreams, ChatHandlers, ServingTasks

log = logging.getLogger("router")


class _CorkedReplies(Cork[pb.ReplyFrame]):
    """Replies written to the connection: those put in one loop turn share one message."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport

    def write(self, frames: list[pb.ReplyFrame]) -> None:
        if not frames or self._transport.is_closing():
            return
        try:
            self._transport.write(encode(pb.ReplyFrames(frames=frames)))
        except FrameTooLarge:
            # Together over the limit: each on its own, and one too large on its own fails
            # its call (as gRPC would fail it with RESOURCE_EXHAUSTED) instead of the stream.
            for frame in frames:
                self._transport.write(_encode_one(frame))

    async def finish(self) -> None:
        self.write_now()
        self._transport.close()  # after what is buffered has been sent

    def abort(self) -> None:
        self.discard()
        self._transport.abort()


def _encode_one(frame: pb.ReplyFrame) -> bytes:
    try:
        return encode(pb.ReplyFrames(frames=[frame]))
    except FrameTooLarge as exc:
        log.warning("call %d: reply not sent: %s", frame.call_id, exc)
        failed = pb.CallFailed(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], details="reply too large"
        )
        return encode(pb.ReplyFrames(frames=[pb.ReplyFrame(call_id=frame.call_id, failed=failed)]))


class _Connection(asyncio.Protocol):
    def __init__(self, server: CallSocketServer) -> None:
        self._server = server
        self._buffer = MessageBuffer()
        self._stream: CallStream | None = None
        # True once the edge ended its side, False if the connection went first.
        self._ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, though they are one.
        replies = _CorkedReplies(cast(asyncio.Transport, transport))
        server = self._server
        stream = self._stream = server.streams.open(server.handlers, replies)
        server.serving.add(
            asyncio.create_task(server.streams.serve_until_ended(stream, self._ended))
        )

    def data_received(self, data: bytes) -> None:
        if self._ended.done() or self._stream is None:
            return
        try:
            messages = self._buffer.feed(data)
        except FrameTooLarge as exc:
            log.warning("call socket: %s; connection dropped", exc)
            self._ended.set_result(False)
            return
        take = self._stream.take
        for message in messages:
            batch = pb.CallFrames.FromString(message)
            if not batch.frames:
                self._ended.set_result(True)
                return
            for frame in batch.frames:
                take(frame)

    def eof_received(self) -> bool:
        # Our side stays open for the answers; without the end marker, the edge is gone.
        if not self._ended.done():
            self._ended.set_result(False)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._ended.done():
            self._ended.set_result(False)


class CallSocketServer:
    def __init__(self, streams: CallStreams, handlers: ChatHandlers) -> None:
        self.streams = streams
        self.handlers = handlers
        self._server: asyncio.Server | None = None
        self.serving = ServingTasks()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self, grace_s: float | None) -> None:
        """Refuses new connections, then waits up to `grace_s` for the open ones to end."""
        if self._server is None:
            return
        self._server.close()
        await self.serving.end(grace_s)
