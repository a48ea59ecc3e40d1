"""The chat-completions call: plan a route chain, try it in order, translate the answer.

Failover: a retryable failure (5xx, Anthropic's 529, connection error, timeout) moves the
same request to the next route of the model's chain; a 429 moves it to the next route on
another provider; any other 4xx is the client's and is returned as is. A stream fails over
only while nothing has been sent; after its first chunk a failure ends it with an error.
Routes whose circuit breaker is open are skipped without waiting on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from aig_common import tracing
from aig_common.errors import APIError, error_body, model_not_found
from catalog.estimate import likely_prompt_tokens
from catalog.live import LiveCatalog
from catalog.models import ChatModel, request_chain
from catalog.tokenizer import chat_prompt_tokens, output_tokens

from .adapters.base import TokenUsage, UpstreamError
from .adapters.sse import SSEDecoder
from .breaker import Breakers
from .capabilities import check_chat_request
from .config import RouterConfig
from .metrics import count_failover, observe_attempt
from .providers import ChatCall, NativeCall, Provider, UpstreamRequest
from .requests import Target
from .upstream import UpstreamClients, UpstreamStream, UpstreamUnreachable

log = logging.getLogger("router")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    provider: str
    upstream_id: str
    status: int
    latency_ms: int


@dataclass(slots=True)
class ChatResult:
    completion: dict[str, Any]
    usage: TokenUsage
    provider: str
    # The catalog model the call is billed as: the fallback's, when a fallback served it.
    model_id: str
    attempts: list[AttemptRecord]
    # Seconds spent in upstream attempts (the chain's wall time: hedges overlap once).
    upstream_s: float = 0.0
    # True when `completion` is the provider's own answer in the client's dialect.
    native: bool = False


@dataclass(slots=True)
class StreamOutcome:
    """Filled in while a stream runs; read once the stream is exhausted."""

    provider: str = ""
    model_id: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    # False when the stream failed before the provider reported (or we could estimate) usage.
    reported_usage: bool = False
    attempts: list[AttemptRecord] = field(default_factory=list)
    # As ChatResult.upstream_s, up to the first chunk.
    upstream_s: float = 0.0
    # True when the chunks are the provider's own stream events in the client's dialect.
    native: bool = False


@dataclass(slots=True)
class CallProgress:
    """How far a unary call has got; read when the edge cancels it because its client left.

    `in_flight` holds the routes whose request went upstream and has not been answered: the
    provider bills us for such a request's prompt even though we close its connection, so
    the abandoned call is billed for that prompt (see `abandoned_usage`)."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    in_flight: list[Target] = field(default_factory=list)


class AttemptsFailed(Exception):
    """Every route failed (or was skipped); carries the error to show and the attempts."""

    def __init__(self, error: Exception, attempts: list[AttemptRecord]) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


def _stream_usage(
    reported: TokenUsage | None,
    finished: bool,
    body: dict[str, Any],
    produced: Produced,
    model: ChatModel,
) -> TokenUsage:
    """What a stream that reached its first chunk is billed for.

    The provider bills us from the moment it accepted the request, so the customer pays
    for the prompt and the output produced even when they leave early (docs: billing rules).
    A stream that ran to its end is billed on the provider's usage exactly. One cut short
    (the client left, or the upstream broke off) may have no usage yet, or only the partial
    figures some providers send first (Anthropic's message_start counts one output token):
    each figure the provider did not report is counted instead. For a model with a public
    tokenizer (OpenAI's; catalog.tokenizer) that is the real count of the prompt, in
    OpenAI's chat format, and of the text and tool-call arguments streamed; for the others
    it is an estimate, the prompt from the request's size (catalog.estimate.
    likely_prompt_tokens, a central estimate rather than the reservation's upper bound) and
    the output from the characters streamed (4 per token). `model` is the catalog model the
    call is billed as (a fallback's, when one served it)."""
    if finished and reported is not None:
        return reported
    counted = output_tokens(model, produced.texts())
    output = -(-produced.chars // 4) if counted is None else counted
    if reported is None:
        return TokenUsage(prompt_tokens=_prompt_tokens(body, model), completion_tokens=output)
    return TokenUsage(
        prompt_tokens=reported.prompt_tokens or _prompt_tokens(body, model),
        completion_tokens=max(reported.completion_tokens, output),
        cached_prompt_tokens=reported.cached_prompt_tokens,
        reasoning_tokens=reported.reasoning_tokens,
    )


def _prompt_tokens(body: dict[str, Any], model: ChatModel) -> int:
    counted = chat_prompt_tokens(body, model)
    if counted is None:
        return likely_prompt_tokens(body, tokens_per_image=model.image_input_tokens)
    return counted


async def abandoned_usage(
    body: dict[str, Any], progress: CallProgress
) -> tuple[Target, TokenUsage] | None:
    """What a unary call its client left is billed for: the prompt of the upstream request
    in flight (counted as for a stream cut short, `_prompt_tokens`), or nothing if no
    request had gone upstream. A non-streamed answer arrives whole, so output produced
    before the cancellation cannot be seen and is not billed. Of two hedged requests only
    the first is billed, as a hedge's duplicate is not billed on success either."""
    if not progress.in_flight:
        return None
    target = progress.in_flight[0]
    try:
        # The process's first count loads the tokenizer: off the event loop.
        prompt = await asyncio.to_thread(_prompt_tokens, body, target.model)
    except asyncio.CancelledError:
        prompt = _prompt_tokens(body, target.model)
    return target, TokenUsage(prompt_tokens=prompt)


class Produced:
    """The output a stream has sent so far, kept as the provider's text pieces (joined only
    if a count is needed): each choice's content and each tool call's arguments, as the
    request's `output_pieces` finds them in its chunks."""

    __slots__ = ("_pieces", "chars")

    def __init__(self) -> None:
        self._pieces: dict[tuple[int, int], list[str]] = {}
        self.chars = 0

    def add(self, pieces: list[tuple[tuple[int, int], str]]) -> None:
        for key, text in pieces:
            if isinstance(text, str):
                self._pieces.setdefault(key, []).append(text)
                self.chars += len(text)

    def texts(self) -> list[str]:
        return ["".join(pieces) for pieces in self._pieces.values()]


def unreachable(provider: str, exc: UpstreamUnreachable) -> UpstreamError:
    if exc.timed_out:
        status, code, what = 504, "upstream_timeout", "did not answer in time"
    else:
        status, code, what = 502, "upstream_unavailable", "could not be reached"
    message = f"The upstream provider '{provider}' {what} ({exc.cause_name})."
    return UpstreamError(
        status=status,
        body=error_body(message, status=status, code=code),
        upstream_status=0,
    )


def _broken_stream(provider: str) -> UpstreamError:
    message = f"The upstream provider '{provider}' ended the stream before it was complete."
    return UpstreamError(
        status=502, body=error_body(message, status=502, code="upstream_stream_broken")
    )


def _all_open(model_id: str) -> UpstreamError:
    message = (
        f"Every provider serving `{model_id}` is failing right now (circuit breakers open); "
        "please retry shortly."
    )
    return UpstreamError(
        status=503, body=error_body(message, status=503, code="upstream_unavailable")
    )


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, UpstreamError):
        return exc.upstream_status or exc.status
    if isinstance(exc, APIError):
        return exc.status
    return 500


def _is_outage(exc: BaseException) -> bool:
    """Failures that say the route is unwell: they feed breakers and trigger failover."""
    return isinstance(exc, UpstreamError) and (
        exc.upstream_status == 0 or exc.upstream_status >= 500
    )


def _is_rate_limit(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.upstream_status == 429


@dataclass(slots=True)
class _StartedStream:
    target: Target
    first: dict[str, Any]
    rest: AsyncGenerator[dict[str, Any], None]
    request: UpstreamRequest
    response: UpstreamStream

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.rest.aclose()
        await self.response.aclose()


@dataclass(frozen=True, slots=True)
class Plan:
    """A call's route chain, and the catalog version's providers that serve it."""

    targets: list[Target]
    config: RouterConfig

    def provider(self, target: Target) -> Provider:
        return self.config.providers.get(target.provider)


class ChatService:
    def __init__(
        self,
        config: LiveCatalog[RouterConfig],
        clients: UpstreamClients,
        breakers: Breakers | None = None,
    ) -> None:
        self._config = config
        self._clients = clients
        self._breakers = breakers or Breakers()

    def plan(self, body: dict[str, Any]) -> Plan:
        """The route chain for this request (`Catalog.chain`: the model's own route, then
        its fallbacks, or those the request names in `aig.fallbacks`, or none with
        `false`), keeping only routes whose model can serve this request."""
        model_id = body.get("model")
        if not isinstance(model_id, str):
            raise model_not_found(model_id)
        config, model = self._config.find(lambda current: current.catalog.chat(model_id))
        if model is None:
            raise model_not_found(model_id)
        catalog = config.catalog
        check_chat_request(body, model)
        targets: list[Target] = []
        for link in request_chain(catalog, model, body):
            if targets:
                try:
                    check_chat_request(body, link.model)
                except APIError:
                    continue  # this fallback cannot serve e.g. images or tools
            targets.append(Target(route=link.route, model=link.model, public_id=model.id))
        return Plan(targets, config)

    # -- unary ---------------------------------------------------------------------------

    async def complete(
        self,
        body: dict[str, Any],
        progress: CallProgress | None = None,
        native: NativeCall | None = None,
    ) -> ChatResult:
        """Answers a non-streamed call. If the call is cancelled (the client left), the
        upstream requests in flight are cancelled with it and `progress` says which they were.
        With `native`, a route whose provider speaks the client's dialect is sent the
        client's own request and answers in it (`ChatResult.native`)."""
        plan = self.plan(body)
        progress = progress if progress is not None else CallProgress()
        attempts = progress.attempts
        began = time.monotonic()
        result, target = await self._failover(
            plan.targets,
            attempts,
            lambda target: self._complete_once(plan, target, body, progress, native),
        )
        completion, usage, is_native = result
        return ChatResult(
            completion=completion,
            usage=usage,
            provider=target.provider,
            model_id=target.model.id,
            attempts=attempts,
            upstream_s=time.monotonic() - began,
            native=is_native,
        )

    async def _complete_once(
        self,
        plan: Plan,
        target: Target,
        body: dict[str, Any],
        progress: CallProgress,
        native: NativeCall | None,
    ) -> tuple[dict[str, Any], TokenUsage, bool]:
        provider = plan.provider(target)
        request = await self._request(provider, target, body, stream=False, native=native)
        progress.in_flight.append(target)
        try:
            reply = await self._clients.post(
                provider.destination, request.path, request.content, request.headers
            )
        except UpstreamUnreachable as exc:
            progress.in_flight.remove(target)
            raise unreachable(target.provider, exc) from exc
        # A cancellation (CancelledError) skips this: the request stays in flight, billed.
        progress.in_flight.remove(target)
        if reply.status != 200:
            raise request.error_from_response(reply.status, reply.body, reply.headers)
        completion, usage = request.parse_completion(orjson.loads(reply.body))
        return completion, usage, request.native

    # -- streaming -----------------------------------------------------------------------

    async def stream(
        self, body: dict[str, Any], outcome: StreamOutcome, native: NativeCall | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yields OpenAI chunks, or the provider's own events when a route served `native`
        untranslated (`outcome.native`). Raises AttemptsFailed before the first chunk if no
        route could start the stream."""
        plan = self.plan(body)
        began = time.monotonic()
        started, target = await self._failover(
            plan.targets,
            outcome.attempts,
            lambda target: self._start_stream(plan, target, body, native),
        )
        outcome.upstream_s = time.monotonic() - began
        outcome.provider, outcome.model_id = target.provider, target.model.id
        outcome.native = started.request.native
        produced = Produced()
        pieces = started.request.output_pieces
        finished = False
        try:
            produced.add(pieces(started.first))
            yield started.first
            async for chunk in started.rest:
                produced.add(pieces(chunk))
                yield chunk
            finished = True
        except UpstreamError:
            self._breakers.record_failure(target.provider, target.upstream_id)
            raise
        finally:
            # Closing the upstream stream is what stops the provider producing (and billing)
            # more once the client has gone.
            await started.aclose()
            reported = started.request.usage()
            if finished and reported is not None:
                outcome.usage = reported
            else:
                # A count may be the process's first, which loads the tokenizer (a second or
                # more on a busy machine; bench/tokenizer.py): off the event loop.
                count = (reported, finished, body, produced, target.model)
                try:
                    outcome.usage = await asyncio.to_thread(_stream_usage, *count)
                except asyncio.CancelledError:
                    outcome.usage = _stream_usage(*count)
                    outcome.reported_usage = True
                    raise
            outcome.reported_usage = True

    async def _start_stream(
        self, plan: Plan, target: Target, body: dict[str, Any], native: NativeCall | None
    ) -> _StartedStream:
        """Opens the upstream stream and waits for its first translated chunk."""
        provider = plan.provider(target)
        request = await self._request(provider, target, body, stream=True, native=native)
        try:
            response = await self._clients.open_stream(
                provider.destination, request.path, request.content, request.headers
            )
        except UpstreamUnreachable as exc:
            raise unreachable(target.provider, exc) from exc
        if response.status != 200:
            try:
                content = await response.read()
            except UpstreamUnreachable as exc:
                raise unreachable(target.provider, exc) from exc
            finally:
                await response.aclose()
            raise request.error_from_response(response.status, content, response.headers)
        rest = _translated(target.provider, request, response)
        try:
            first = await rest.__anext__()
        except StopAsyncIteration:
            await response.aclose()
            raise _broken_stream(target.provider) from None
        except BaseException:
            await rest.aclose()
            await response.aclose()
            raise
        return _StartedStream(target, first, rest, request, response)

    # -- the chain -----------------------------------------------------------------------

    async def _failover(
        self,
        targets: list[Target],
        attempts: list[AttemptRecord],
        run: Callable[[Target], Awaitable[T]],
    ) -> tuple[T, Target]:
        """Tries the chain in order (hedging the first two when the model asks for it)."""
        remaining = [t for t in targets if self._breakers.allow(t.provider, t.upstream_id)]
        if not remaining:
            raise AttemptsFailed(_all_open(targets[0].public_id), attempts)
        last_error: Exception | None = None
        hedge_ms = targets[0].model.hedge_after_ms
        while remaining:
            target = remaining.pop(0)
            try:
                if hedge_ms and remaining and last_error is None:
                    partner = remaining.pop(0)
                    return await self._hedge(target, partner, hedge_ms / 1000, attempts, run)
                return await self._attempt(target, attempts, run), target
            except AttemptsFailed as failed:
                last_error = failed.error
            except Exception as exc:
                last_error = exc
            if not (_is_outage(last_error) or _is_rate_limit(last_error)):
                break
            if _is_rate_limit(last_error):
                # Never retry a rate limit on the provider that set it.
                remaining = [t for t in remaining if t.provider != target.provider]
            if remaining:
                count_failover(target.provider)
        assert last_error is not None
        raise AttemptsFailed(last_error, attempts)

    async def _attempt(
        self, target: Target, attempts: list[AttemptRecord], run: Callable[[Target], Awaitable[T]]
    ) -> T:
        with tracing.span("upstream attempt", kind=tracing.SpanKind.CLIENT) as span:
            started = time.monotonic()
            try:
                result = await run(target)
            except asyncio.CancelledError:
                attempts.append(self._record(target, 499, started))
                _describe_attempt(span, target, attempts, "cancelled")
                observe_attempt(target.provider, "cancelled", time.monotonic() - started)
                raise
            except Exception as exc:
                attempts.append(self._record(target, _status_of(exc), started))
                _describe_attempt(span, target, attempts, "error")
                observe_attempt(target.provider, "error", time.monotonic() - started)
                # The exception's type only: a provider's message may quote the request.
                log.warning(
                    "upstream attempt %d failed: provider=%s model=%s status=%d (%s)",
                    len(attempts),
                    target.provider,
                    target.upstream_id,
                    attempts[-1].status,
                    type(exc).__name__,
                )
                if _is_outage(exc):
                    self._breakers.record_failure(target.provider, target.upstream_id)
                raise
            attempts.append(self._record(target, 200, started))
            observe_attempt(target.provider, "ok", time.monotonic() - started)
            _describe_attempt(span, target, attempts, "ok")
            self._breakers.record_success(target.provider, target.upstream_id)
            return result

    async def _hedge(
        self,
        first: Target,
        second: Target,
        delay_s: float,
        attempts: list[AttemptRecord],
        run: Callable[[Target], Awaitable[T]],
    ) -> tuple[T, Target]:
        """Starts `second` if `first` has not answered within `delay_s`; the first answer
        wins and the other attempt is cancelled (its upstream connection closed)."""
        tasks = {asyncio.create_task(self._attempt(first, attempts, run)): first}
        try:
            return await self._race(tasks, second, delay_s, attempts, run)
        except asyncio.CancelledError:
            # The caller left: asyncio.wait does not cancel what it waits for, so each
            # attempt is cancelled here (closing its upstream connection) and awaited, so
            # its record is in `attempts` before the cancellation goes on.
            for task in tasks:
                task.cancel()
            for task in tasks:
                await _discard(task)
            raise

    async def _race(
        self,
        tasks: dict[asyncio.Task[T], Target],
        second: Target,
        delay_s: float,
        attempts: list[AttemptRecord],
        run: Callable[[Target], Awaitable[T]],
    ) -> tuple[T, Target]:
        done, _ = await asyncio.wait(tasks, timeout=delay_s)
        if not done:
            tasks[asyncio.create_task(self._attempt(second, attempts, run))] = second
        errors: list[Exception] = []
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winner = next((task for task in done if task.exception() is None), None)
            if winner is not None:
                for loser in pending:
                    loser.cancel()
                for loser in (pending | done) - {winner}:
                    await _discard(loser)
                return winner.result(), tasks[winner]
            for task in done:
                error = task.exception()
                assert isinstance(error, Exception)
                errors.append(error)
                if not (_is_outage(error) or _is_rate_limit(error)):
                    for loser in pending:
                        loser.cancel()
                        await _discard(loser)
                    raise AttemptsFailed(error, attempts)
            if not pending and len(tasks) == 1:
                # The first failed before the hedge delay: the partner is simply next.
                follow_up = asyncio.create_task(self._attempt(second, attempts, run))
                tasks[follow_up] = second
                pending = {follow_up}
        raise AttemptsFailed(errors[-1], attempts)

    @staticmethod
    def _record(target: Target, status: int, started: float) -> AttemptRecord:
        return AttemptRecord(
            provider=target.provider,
            upstream_id=target.upstream_id,
            status=status,
            latency_ms=int((time.monotonic() - started) * 1000),
        )

    async def _request(
        self,
        provider: Provider,
        target: Target,
        body: dict[str, Any],
        *,
        stream: bool,
        native: NativeCall | None = None,
    ) -> UpstreamRequest:
        if native is not None:
            call = ChatCall(target, body, stream, native=native)
            passed = provider.type.native_request(provider.instance, call)
            if passed is not None:
                return passed
        images: dict[str, tuple[str, bytes]] = {}
        urls = provider.type.image_urls_to_fetch(body)
        if urls:
            images = dict(await self._clients.fetch_images(urls))
        call = ChatCall(target, body, stream, images, native)
        return provider.type.chat_request(provider.instance, call)


def _describe_attempt(
    span: tracing.Span | None, target: Target, attempts: list[AttemptRecord], outcome: str
) -> None:
    """The attempt's span: its place among the call's attempts (as in the UsageEvent), the
    route it tried and how it ended. A stream's attempt ends at its first chunk."""
    if span is None:
        return
    record = attempts[-1]
    span.set_attributes(
        {
            "aig.attempt": len(attempts),
            "aig.provider": target.provider,
            "aig.model": target.model.id,
            "aig.upstream_model": target.upstream_id,
            "aig.outcome": outcome,
            "http.response.status_code": record.status,
        }
    )


async def _discard(task: asyncio.Task[Any]) -> None:
    """Awaits a cancelled loser; a stream it had already opened is closed."""
    try:
        result = await task
    except BaseException:
        return
    if isinstance(result, _StartedStream):
        await result.aclose()


async def _translated(
    provider: str, request: UpstreamRequest, response: UpstreamStream
) -> AsyncGenerator[dict[str, Any], None]:
    decoder = SSEDecoder()
    finished = False
    try:
        async for raw in response.chunks():
            for event in decoder.feed(raw):
                for chunk in request.translate_event(event.event, event.data):
                    yield chunk
                if request.is_done():
                    finished = True
        for event in decoder.flush():
            for chunk in request.translate_event(event.event, event.data):
                yield chunk
        for chunk in request.finish():
            yield chunk
        finished = finished or request.is_done()
    except UpstreamUnreachable as exc:
        raise _broken_stream(provider) from exc
    if not finished:
        raise _broken_stream(provider)
