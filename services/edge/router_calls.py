"""The edge's side of the router contract for chat calls, shared by every ingress dialect.

Chat Completions, the Anthropic Messages API (and any later dialect) all send the router
the same internal OpenAI chat body (another dialect adds the client's own body, which a
provider speaking that dialect is sent untranslated: router.proto NativeBody); this module
makes that call, turns a router that cannot be reached into a 503 (releasing the
reservation when the router never took the call), and opens a stream far enough to know
its status and `x-aig-*` headers before answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import grpc
from starlette.requests import Request
from starlette.types import Receive

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common import tracing
from aig_common.errors import APIError
from controldb import AuthenticatedKey
from controldb.money import Admission
from router.call_streams import ChatHandlers

from .admission import Admissions
from .http import request_id
from .metrics import note_upstream
from .router_streams import RouterStreams, UnaryCall
from .wire import HANG_UP_EXTENSION

log = logging.getLogger("edge")


def router_unavailable(exc: grpc.aio.AioRpcError) -> APIError:
    return router_failed(exc.code())


def router_failed(status: grpc.StatusCode) -> APIError:
    return APIError(
        503,
        f"The gateway's router is unavailable ({status.name}); please retry.",
        code="router_unavailable",
        error_type="server_error",
    )


def client_closed() -> APIError:
    # nginx's 499: no one reads this answer, but the access log and metrics say what ended it.
    return APIError(
        499, "The client closed the connection before the answer.", code="client_closed"
    )


class Cancellable(Protocol):
    def cancel(self) -> bool: ...


class HangUpWatch(Protocol):
    happened: bool

    def arm(self, callback: Callable[[], object]) -> None: ...

    def disarm(self) -> None: ...


class ReceivedHangUp:
    """A hang-up told by the ASGI disconnect message, for a server that does not give the
    connection's `HangUp` (edge.wire) in the scope: a task waits on `receive()`. Armed after
    the request body was read, so the next message is the disconnect (the server holds
    pipelined requests until this one is answered)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._waiting: asyncio.Task[None] | None = None
        self.happened = False

    def arm(self, callback: Callable[[], object]) -> None:
        self._waiting = asyncio.create_task(self._wait(callback))

    async def _wait(self, callback: Callable[[], object]) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.happened = True
        callback()

    def disarm(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()


def hang_up_of(request: Request) -> HangUpWatch:
    """The connection's own hang-up signal when our protocol serves it (no task per call),
    else one read from the ASGI messages."""
    extension = request.scope.get("extensions", {}).get(HANG_UP_EXTENSION)
    if extension is not None:
        hang_up: HangUpWatch = extension["signal"]
        return hang_up
    return ReceivedHangUp(request.receive)


def call_context(request: Request, key: AuthenticatedKey, admission: Admission) -> pb.CallContext:
    return pb.CallContext(
        request_id=request_id(request),
        account_id=key.account_id,
        key_id=key.key_id,
        workspace_id=key.workspace_id or "",
        # The edge's span when tracing is on, else the client's own header passed on.
        traceparent=tracing.outgoing_traceparent(request.headers.get("traceparent", "")),
        markup_basis_points=admission.markup_basis_points,
        reservation_id=admission.reservation_id,
        reserved_nano_usd=admission.amount_nano_usd,
    )


@dataclass
class OpenedStream:
    """A router stream whose first event has arrived: `first` is a chunk, an error (sent
    before any output, so the caller can still answer with its HTTP status) or the end."""

    first: pb.ChatStreamEvent
    call: Cancellable
    rest: AsyncIterator[pb.ChatStreamEvent]
    # x-aig-provider, x-aig-model and x-aig-attempts, when the router said who serves.
    headers: dict[str, str] = field(default_factory=dict)
    # True when the chunks are the provider's own events in the request's native dialect
    # (router.proto StreamStart.native), to be framed and passed on untranslated.
    native: bool = False


@dataclass(frozen=True)
class RouterLink:
    """How the edge reaches its router. `stub` serves every RPC; `streams` carries the chat
    calls (without it each is a gRPC call of its own); `inline` is the router in this
    process (edge/in_process_router.py), whose handler a non-streamed call then awaits in
    the request's own task, with no frame, no task of the router's and no future between
    the two (a streamed call still goes through `streams`)."""

    stub: pb_grpc.RouterStub
    streams: RouterStreams | None = None
    inline: ChatHandlers | None = None


class RouterCalls:
    def __init__(self, admissions: Admissions) -> None:
        self._admissions = admissions
        self.router: pb_grpc.RouterStub
        self._streams: RouterStreams | None = None
        self._inline: ChatHandlers | None = None

    def connect(self, link: RouterLink) -> None:
        self.router = link.stub
        self._streams = link.streams
        self._inline = link.inline

    def _chat(
        self, message: pb.ChatRequest
    ) -> UnaryCall | grpc.aio.UnaryUnaryCall[pb.ChatRequest, pb.ChatResponse]:
        if self._streams is not None:
            return self._streams.chat(message)
        return self.router.ChatCompletion(message)

    async def failed(self, exc: grpc.aio.AioRpcError, admission: Admission) -> NoReturn:
        # UNAVAILABLE means the router never took the call, so no usage event will release
        # the reservation; anything else leaves it to settlement or, at worst, to expiry.
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            await self._admissions.release(admission)
        raise router_unavailable(exc) from exc

    async def complete(
        self, message: pb.ChatRequest, admission: Admission, request: Request
    ) -> pb.ChatResponse:
        """The router's answer to a non-streamed call. If the client hangs up first, the
        call is cancelled, which cancels the upstream request (no output is produced for no
        one), and the router bills the prompt the provider was sent."""
        if self._inline is not None:
            return await self._complete_inline(self._inline, message, request)
        try:
            call = self._chat(message)
        except grpc.aio.AioRpcError as exc:
            await self.failed(exc, admission)
        hang_up = hang_up_of(request)
        hang_up.arm(call.cancel)
        try:
            reply: pb.ChatResponse = await call
        except asyncio.CancelledError:
            if hang_up.happened:
                raise client_closed() from None
            raise
        except grpc.aio.AioRpcError as exc:
            await self.failed(exc, admission)
        finally:
            hang_up.disarm()
        note_upstream(reply.upstream_us)
        return reply

    async def _complete_inline(
        self, router: ChatHandlers, message: pb.ChatRequest, request: Request
    ) -> pb.ChatResponse:
        """The router's handler awaited by this task. A hang-up cancels this task, which the
        handler meters as abandoned, as it does a cancelled call of its own; the cancellation
        is then taken back, so the task goes on to answer 499 for the access log."""
        task = asyncio.current_task()
        assert task is not None
        hang_up = hang_up_of(request)
        hang_up.arm(task.cancel)
        try:
            reply = await router.ChatCompletion(message, None)
        except asyncio.CancelledError:
            if hang_up.happened and task.uncancel() == 0:
                raise client_closed() from None
            raise
        except Exception:
            # The handler answers every failure it knows of; this is a fault in the router,
            # answered as a router call that failed (call_streams.CallStream._answer sends
            # UNKNOWN).
            log.exception("call %s failed in the router", message.context.request_id)
            raise router_failed(grpc.StatusCode.UNKNOWN) from None
        finally:
            hang_up.disarm()
        note_upstream(reply.upstream_us)
        return reply

    async def open_stream(self, message: pb.ChatRequest, admission: Admission) -> OpenedStream:
        call: Cancellable
        events: AsyncIterator[pb.ChatStreamEvent]
        headers: dict[str, str] = {}
        native = False
        try:
            if self._streams is not None:
                call = events = self._streams.stream_chat(message)
            else:
                unary_stream = self.router.StreamChatCompletion(message)
                call, events = unary_stream, unary_stream.__aiter__()
            first: pb.ChatStreamEvent = await events.__anext__()
            if first.WhichOneof("event") == "start":
                native = first.start.native
                headers["x-aig-provider"] = first.start.provider
                headers["x-aig-model"] = first.start.model
                headers["x-aig-attempts"] = str(first.start.attempts)
                note_upstream(first.start.upstream_us)
                if first.start.first_chunk:
                    first = pb.ChatStreamEvent(chunk=first.start.first_chunk)
                else:
                    first = await events.__anext__()
        except grpc.aio.AioRpcError as exc:
            await self.failed(exc, admission)
        except StopAsyncIteration:
            first = pb.ChatStreamEvent(end=pb.StreamEnd())
        return OpenedStream(first=first, call=call, rest=events, headers=headers, native=native)
