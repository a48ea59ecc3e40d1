"""The router inside the edge's own process (`AIG_EDGE_IN_PROCESS_ROUTER=1`), for an install
on one host.

The router is built and started exactly as `python -m router` builds it (router/runtime.py);
only the hop differs. A non-streamed chat call awaits the router's handler in the request's
own task (edge/router_calls.py `_complete_inline`, given `InProcessRouter.servicer`). A
streamed call's frame is handed to the router's `CallStream.take` on the same event loop,
and each reply comes back as a `ReplyFrames` as it is put. Either way nothing is encoded, no
socket is written and no second process wakes up: of the stages a call crosses
(bench/README.md), the hop and the router's own wake-up go. Everything else — planning,
failover, breakers, metering with its own Kafka producer and fsynced journal, drains — is
the router's code, unchanged.

What the edge gives up: the router's CPU is the edge's (scale with more edge processes,
AIG_EDGE_REUSE_PORT), the edge holds the provider keys, and a router cannot be restarted or
scaled apart from its edges. On Kubernetes, run them apart (the default).

Embeddings and the model list still travel as gRPC calls, to the router's gRPC server on a
loopback port of this process, so that every RPC but chat is served by one code path.
"""

from __future__ import annotations

import asyncio
import logging

from aig.router.v1 import router_pb2 as pb
from router.call_streams import CallStream, CallStreams, ChatHandlers, ServingTasks
from router.runtime import RunningRouter, start_router
from router.settings import RouterSettings

from .router_streams import OnBroken, OnReplies, unavailable

log = logging.getLogger("edge")


class InProcessCalls:
    """Router.Calls streams from the edge to a router in its process: each channel the edge
    opens is served by `streams`, its calls answered by `handlers` (the router's servicer)."""

    def __init__(self, streams: CallStreams, handlers: ChatHandlers) -> None:
        self._streams = streams
        self._handlers = handlers
        self._serving = ServingTasks()

    @property
    def streams_served(self) -> int:
        """Streams still being served: each ends once the edge has ended it and its calls
        are answered, or at once when the edge cancels it."""
        return len(self._serving)

    def open_channel(self) -> InProcessCallChannel:
        return InProcessCallChannel(self)

    def serve(self, channel: InProcessCallChannel, ended: asyncio.Future[bool]) -> CallStream:
        stream = self._streams.open(self._handlers, channel)
        self._serving.add(asyncio.create_task(self._streams.serve_until_ended(stream, ended)))
        return stream

    async def end(self, grace_s: float | None) -> None:
        """Waits up to `grace_s` for the streams to end; what is left is cancelled, its calls
        metered as abandoned."""
        await self._serving.end(grace_s)


class InProcessRouter:
    """The router, started in this process, and the calls the edge sends it."""

    def __init__(self, running: RunningRouter) -> None:
        self._running = running
        self.calls = InProcessCalls(running.servicer.call_streams, running.servicer)

    @classmethod
    async def start(cls, settings: RouterSettings, *, client_id: str) -> InProcessRouter:
        """`client_id` names the router's Kafka producer and spool files, which must differ
        from the edge's own in the shared spool directory."""
        running = await start_router(settings, address="127.0.0.1:0", client_id=client_id)
        sandboxed = running.config.current.providers.sandboxed()
        log.info(
            "router running in this process (gRPC on 127.0.0.1:%d); sandboxed providers: %s",
            running.port,
            ", ".join(sandboxed) or "none",
        )
        return cls(running)

    @property
    def servicer(self) -> ChatHandlers:
        """The router's chat handlers, for a non-streamed call to await in its own task."""
        return self._running.servicer

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self._running.port}"

    async def stop(self, drain_s: float) -> None:
        """The router's drain, as on SIGTERM to `python -m router`: calls in flight run to
        their end (at most `drain_s`), every usage event is flushed to Kafka or the spool."""
        await self._running.stop(drain_s, self.calls.end(drain_s))


class InProcessCallChannel:
    """One Router.Calls stream between the edge and the router in its process: the edge's
    `CallChannel` (edge/router_streams.py) and the router's `Replies` (router/call_streams.py)
    in one object.

    Frames go straight across both ways: the edge's to the router's `CallStream.take` (which
    only starts or cancels a task), the router's replies to the edge's stream as they are
    put (which only resolves a waiting call), so the edge's request carries on at the next
    turn of the loop rather than a turn later. The one exception is a frame put while the stream is
    being opened (a draining router says so at once): it is handed over a turn later, so that
    it cannot retire a stream the edge has not finished opening."""

    def __init__(self, calls: InProcessCalls) -> None:
        self._calls = calls
        self._stream: CallStream | None = None
        self._opening: list[pb.ReplyFrame] | None = []
        self._on_replies: OnReplies | None = None
        self._on_broken: OnBroken | None = None
        # True once the edge ended its side, False if it went away (cancelled the stream).
        self._ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # The edge's side.

    def start(self, on_replies: OnReplies, on_broken: OnBroken) -> None:
        self._on_replies, self._on_broken = on_replies, on_broken
        self._stream = self._calls.serve(self, self._ended)
        opening, self._opening = self._opening, None
        if opening:
            asyncio.get_running_loop().call_soon(self._hand_over, opening)

    def send(self, frame: pb.CallFrame) -> None:
        if self._stream is not None and not self._ended.done():
            self._stream.take(frame)

    def end(self) -> None:
        if not self._ended.done():
            self._ended.set_result(True)

    def cancel(self) -> None:
        self._on_replies = self._on_broken = None
        if not self._ended.done():
            self._ended.set_result(False)

    # The router's side.

    def put(self, frame: pb.ReplyFrame) -> None:
        if self._opening is not None:
            self._opening.append(frame)
        else:
            self._hand_over([frame])

    def _hand_over(self, frames: list[pb.ReplyFrame]) -> None:
        if self._on_replies is not None:
            self._on_replies(pb.ReplyFrames(frames=frames))

    async def finish(self) -> None:
        self._broken()

    def abort(self) -> None:
        self._broken()

    def _broken(self) -> None:
        # The stream is over, answered or not: the edge resends any call without a reply.
        # Letting go of the router's stream, which holds this channel as its replies, ends
        # the cycle between them, so reference counting frees both (aig_common.runtime: the
        # cycle collector runs rarely, and a stream is replaced every 64 calls).
        self._stream = None
        on_broken, self._on_broken, self._on_replies = self._on_broken, None, None
        if on_broken is not None:
            on_broken(unavailable("the router's call stream ended"))
