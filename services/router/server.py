"""The router's gRPC service: chat (unary, streaming, and many calls on one stream),
embeddings and the model list."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import grpc
import orjson
from prometheus_client import Counter

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common import logs, tracing
from aig_common.errors import APIError, error_body, parse_json_object
from catalog.live import LiveCatalog

from .adapters.base import TokenUsage, UpstreamError
from .call_socket import CallSocketServer
from .call_streams import CallStreams
from .chat import (
    AttemptRecord,
    AttemptsFailed,
    CallProgress,
    ChatService,
    StreamOutcome,
    abandoned_usage,
)
from .config import RouterConfig
from .embed import EmbeddingsService
from .metering import CLIENT_CLOSED, Meter, error_code_of
from .providers import NativeCall
from .requests import Target

log = logging.getLogger("router")

UPSTREAM_CALLS = Counter(
    "aig_router_upstream_calls_total",
    "Calls the router made to providers, by provider and outcome",
    ["provider", "endpoint", "outcome"],
)


def _usage_message(usage: TokenUsage) -> pb.TokenUsage:
    return pb.TokenUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cache_write_prompt_tokens=usage.cache_write_prompt_tokens,
        cache_write_1h_prompt_tokens=usage.cache_write_1h_prompt_tokens,
    )


def _native_call(request: pb.ChatRequest) -> NativeCall | None:
    """The client's own request when it spoke another dialect (router.proto NativeBody)."""
    if not request.HasField("native"):
        return None
    native = request.native
    return NativeCall(native.dialect, parse_json_object(native.body), dict(native.headers))


def _error_reply(exc: Exception) -> pb.ErrorReply:
    if isinstance(exc, APIError):
        return pb.ErrorReply(status=exc.status, body=exc.to_bytes(), headers=exc.headers)
    if isinstance(exc, UpstreamError):
        return pb.ErrorReply(status=exc.status, body=orjson.dumps(exc.body), headers=exc.headers)
    log.exception("internal error in router", exc_info=exc)
    body = error_body("The gateway hit an internal error.", status=500, code="internal_error")
    return pb.ErrorReply(status=500, body=orjson.dumps(body))


def _failure(exc: Exception) -> tuple[pb.ErrorReply, int, str]:
    if isinstance(exc, AttemptsFailed):
        exc = exc.error
    reply = _error_reply(exc)
    return reply, reply.status, error_code_of(orjson.loads(reply.body))


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) else ""


_SERVICE = "aig.router.v1.Router"


def _status(reply: pb.ChatResponse | pb.EmbeddingsResponse) -> int:
    return reply.error.status if reply.WhichOneof("result") == "error" else 200


def _describe_call(
    span: tracing.Span,
    call: pb.CallContext,
    provider: str,
    model: str,
    status: int,
    attempts: int,
) -> None:
    """The router's span of one call: who called (ids only) and how it ended."""
    span.set_attributes(
        {
            "rpc.system": "grpc",
            "aig.request_id": call.request_id,
            "aig.account_id": call.account_id,
            "aig.provider": provider,
            "aig.model": model,
            "aig.attempts": attempts,
            "aig.status": status,
        }
    )
    if status >= 500:
        span.set_status(tracing.Status(tracing.StatusCode.ERROR))


class RouterServicer(pb_grpc.RouterServicer):
    def __init__(
        self,
        config: LiveCatalog[RouterConfig],
        chat: ChatService,
        embeddings: EmbeddingsService,
        meter: Meter,
    ) -> None:
        self._config = config
        self._chat = chat
        self._embeddings = embeddings
        self._meter = meter
        self._call_streams = CallStreams()

    def drain(self) -> None:
        """Tells every edge's call stream, open or opened from now on, to send no new calls."""
        self._call_streams.drain()

    @property
    def call_streams(self) -> CallStreams:
        """Every Router.Calls stream this servicer answers, whichever transport carries it."""
        return self._call_streams

    def call_socket(self) -> CallSocketServer:
        """Router.Calls on a plain socket (router/call_socket.py), answered by this servicer."""
        return CallSocketServer(self._call_streams, self)

    def _record_failure(
        self,
        call: pb.CallContext,
        endpoint: str,
        body: dict[str, Any],
        exc: Exception,
        started: float,
    ) -> tuple[pb.ErrorReply, list[AttemptRecord]]:
        """Meters a unary call that failed (at no cost) and returns the reply for the edge."""
        reply, status, code = _failure(exc)
        attempts = exc.attempts if isinstance(exc, AttemptsFailed) else []
        provider = attempts[-1].provider if attempts else ""
        UPSTREAM_CALLS.labels(provider, endpoint, "error").inc()
        self._meter.record(
            call,
            endpoint=endpoint,
            model_id=_model_of(body),
            provider=provider,
            status=status,
            error_code=code,
            usage=None,
            streamed=False,
            started_at=started,
            attempts=attempts,
        )
        return reply, attempts

    def _record_abandoned(
        self,
        call: pb.CallContext,
        endpoint: str,
        body: dict[str, Any],
        started: float,
        attempts: Sequence[AttemptRecord] = (),
        billed: tuple[Target, TokenUsage] | None = None,
    ) -> None:
        """The edge cancelled the call (its client left, or a deadline fired). An event all
        the same, so settlement frees the reservation now rather than at its expiry: at no
        cost if nothing was asked of a provider yet, else `billed`, the route whose request
        was upstream and the usage the provider bills us for it."""
        target, usage = billed if billed is not None else (None, None)
        self._meter.record(
            call,
            endpoint=endpoint,
            model_id=target.model.id if target is not None else _model_of(body),
            provider=target.provider if target is not None else "",
            status=CLIENT_CLOSED,
            error_code="client_closed",
            usage=usage,
            streamed=False,
            started_at=started,
            attempts=attempts,
        )

    async def _record_abandoned_chat(
        self, call: pb.CallContext, body: dict[str, Any], progress: CallProgress, started: float
    ) -> None:
        """A unary chat call whose client left. Cancelling closed the upstream request in
        flight, but the provider bills us for its prompt, so that prompt is billed (the rule
        for every abandoned call: docs/architecture.md, billing rules)."""
        billed = await abandoned_usage(body, progress)
        self._record_abandoned(call, "chat.completions", body, started, progress.attempts, billed)

    async def ChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> pb.ChatResponse:
        logs.current_request_id.set(request.context.request_id)
        with tracing.remote_span(f"{_SERVICE}/ChatCompletion", request.context.traceparent) as span:
            reply = await self._chat_completion(request)
            if span is not None:
                _describe_call(
                    span,
                    request.context,
                    reply.provider,
                    reply.model,
                    _status(reply),
                    reply.attempts,
                )
            return reply

    async def _chat_completion(self, request: pb.ChatRequest) -> pb.ChatResponse:
        started = time.monotonic()
        body: dict[str, Any] = {}
        progress = CallProgress()
        try:
            body = parse_json_object(request.body)
            result = await self._chat.complete(body, progress, _native_call(request))
        except asyncio.CancelledError:
            await self._record_abandoned_chat(request.context, body, progress, started)
            raise
        except Exception as exc:
            reply, attempts = self._record_failure(
                request.context, "chat.completions", body, exc, started
            )
            return pb.ChatResponse(error=reply, attempts=len(attempts))
        UPSTREAM_CALLS.labels(result.provider, "chat.completions", "ok").inc()
        self._meter.record(
            request.context,
            endpoint="chat.completions",
            model_id=result.model_id,
            provider=result.provider,
            status=200,
            usage=result.usage,
            streamed=False,
            started_at=started,
            attempts=result.attempts,
        )
        return pb.ChatResponse(
            completion=orjson.dumps(result.completion),
            provider=result.provider,
            usage=_usage_message(result.usage),
            attempts=len(result.attempts),
            model=result.model_id,
            upstream_us=int(result.upstream_s * 1_000_000),
            native=result.native,
        )

    async def StreamChatCompletion(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext | None
    ) -> AsyncIterator[pb.ChatStreamEvent]:
        logs.current_request_id.set(request.context.request_id)
        name = f"{_SERVICE}/StreamChatCompletion"
        with tracing.remote_span(name, request.context.traceparent) as span:
            events = self._stream_chat(request, span)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # meters the call now, not when it is collected

    async def _stream_chat(
        self, request: pb.ChatRequest, span: tracing.Span | None
    ) -> AsyncGenerator[pb.ChatStreamEvent, None]:
        started = time.monotonic()
        outcome = StreamOutcome()
        sent_any = False
        status, code = CLIENT_CLOSED, "client_closed"
        body: dict[str, Any] = {}
        chunks: AsyncGenerator[dict[str, Any], None] | None = None
        try:
            body = parse_json_object(request.body)
            chunks = self._chat.stream(body, outcome, _native_call(request))
            async for chunk in chunks:
                if not sent_any:
                    sent_any = True
                    start = pb.StreamStart(
                        provider=outcome.provider,
                        attempts=len(outcome.attempts),
                        first_chunk=orjson.dumps(chunk),
                        model=outcome.model_id,
                        upstream_us=int(outcome.upstream_s * 1_000_000),
                        native=outcome.native,
                    )
                    yield pb.ChatStreamEvent(start=start)
                    continue
                yield pb.ChatStreamEvent(chunk=orjson.dumps(chunk))
            status, code = 200, ""
        except Exception as exc:
            UPSTREAM_CALLS.labels(outcome.provider, "chat.completions", "error").inc()
            reply, status, code = _failure(exc)
            if not sent_any:
                yield pb.ChatStreamEvent(error=reply)
                return
            # After the first chunk the HTTP status is gone: the error travels as a chunk.
            yield pb.ChatStreamEvent(chunk=reply.body)
        finally:
            # Runs for success, failure and a client that hung up (generator closed).
            if chunks is not None:
                # When gRPC closes this generator at a `yield` (the edge cancelled while a
                # chunk was being sent), the stream below is still suspended at its own
                # yield: closing it now runs its cleanup (the upstream closed, the usage
                # counted) before the call is metered, instead of whenever it is collected.
                await chunks.aclose()
            attempts = outcome.attempts
            if span is not None:
                model = outcome.model_id or _model_of(body)
                _describe_call(
                    span, request.context, outcome.provider, model, status, len(attempts)
                )
            self._meter.record(
                request.context,
                endpoint="chat.completions",
                model_id=outcome.model_id or _model_of(body),
                provider=outcome.provider or (attempts[-1].provider if attempts else ""),
                status=status,
                error_code=code,
                usage=outcome.usage if outcome.reported_usage else None,
                streamed=True,
                started_at=started,
                attempts=attempts,
            )
        if status == 200:
            UPSTREAM_CALLS.labels(outcome.provider, "chat.completions", "ok").inc()
        yield pb.ChatStreamEvent(
            end=pb.StreamEnd(provider=outcome.provider, usage=_usage_message(outcome.usage))
        )

    async def CreateEmbeddings(
        self, request: pb.EmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbeddingsResponse:
        logs.current_request_id.set(request.context.request_id)
        name = f"{_SERVICE}/CreateEmbeddings"
        with tracing.remote_span(name, request.context.traceparent) as span:
            reply = await self._create_embeddings(request)
            if span is not None:
                _describe_call(span, request.context, reply.provider, "", _status(reply), 1)
            return reply

    async def _create_embeddings(self, request: pb.EmbeddingsRequest) -> pb.EmbeddingsResponse:
        started = time.monotonic()
        body: dict[str, Any] = {}
        try:
            body = parse_json_object(request.body)
            result = await self._embeddings.create(body)
        except asyncio.CancelledError:
            self._record_abandoned(request.context, "embeddings", body, started)
            raise
        except Exception as exc:
            reply, _ = self._record_failure(request.context, "embeddings", body, exc, started)
            return pb.EmbeddingsResponse(error=reply)
        UPSTREAM_CALLS.labels(result.provider, "embeddings", "ok").inc()
        self._meter.record(
            request.context,
            endpoint="embeddings",
            model_id=result.model_id,
            provider=result.provider,
            status=200,
            usage=result.usage,
            streamed=False,
            started_at=started,
        )
        return pb.EmbeddingsResponse(
            response=orjson.dumps(result.response),
            provider=result.provider,
            usage=_usage_message(result.usage),
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(body=self._config.current.models_body)

    async def Calls(
        self, request_iterator: AsyncIterator[pb.CallFrames], context: grpc.aio.ServicerContext
    ) -> None:
        await self._call_streams.serve(self, request_iterator, context)
