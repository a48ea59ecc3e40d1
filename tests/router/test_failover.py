"""Failover, rate-limit routing, breakers and hedging, with a fake upstream (no network).

The e2e suite proves the same against the sandbox; these pin the rules one by one and
cheaply, including the timing-dependent hedging paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
import pytest

from aig.router.v1 import router_pb2 as pb
from catalog.live import LiveCatalog
from catalog.models import Catalog, load_catalog
from catalog.tokenizer import chat_prompt_tokens
from router.adapters.base import TokenUsage
from router.breaker import Breakers
from router.chat import AttemptsFailed, ChatService
from router.config import RouterConfig
from router.metering import CLIENT_CLOSED
from router.server import RouterServicer
from router.upstream import Destination, UpstreamClients, UpstreamReply, UpstreamUnreachable

PRIMARY = "gpt-4o-mini"  # openai
# Named by the request, so every route speaks OpenAI's format: openai, openai, openrouter.
CHAIN = ["gpt-4.1-mini", "deepseek-chat"]


def _completion(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "upstream",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


@dataclass
class Step:
    status: int = 200
    delay_s: float = 0.0
    unreachable: BaseException | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeUpstream:
    """Answers each provider's calls from a script, in order; records what happened."""

    def __init__(self, script: dict[str, list[Step]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []  # (provider, upstream model)
        self.cancelled: list[str] = []

    async def post(
        self, destination: Destination, path: str, content: bytes, headers: Any = None
    ) -> UpstreamReply:
        model = orjson.loads(content)["model"]
        self.calls.append((destination.name, model))
        step = self.script[destination.name].pop(0)
        try:
            await asyncio.sleep(step.delay_s)
        except asyncio.CancelledError:
            self.cancelled.append(destination.name)
            raise
        if step.unreachable is not None:
            raise UpstreamUnreachable(step.unreachable)
        if step.status != 200:
            error = {"error": {"message": "scripted", "type": "x", "code": None}}
            return UpstreamReply(step.status, step.headers, orjson.dumps(error))
        return UpstreamReply(200, {}, _completion(f"from {destination.name}"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _service(
    catalog: Catalog,
    upstream: FakeUpstream,
    *,
    hedge_ms: int | None = None,
    breakers: Breakers | None = None,
) -> ChatService:
    if hedge_ms is not None:
        models = tuple(
            replace(m, hedge_after_ms=hedge_ms) if m.id == PRIMARY else m
            for m in catalog.chat_models
        )
        catalog = replace(catalog, chat_models=models)
    config = RouterConfig.build(catalog, {}, "http://127.0.0.1:1")
    return ChatService(LiveCatalog.fixed(config), cast(UpstreamClients, upstream), breakers)


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": PRIMARY,
        "messages": [{"role": "user", "content": "hi"}],
        "aig": {"fallbacks": CHAIN},
        **extra,
    }


async def test_a_5xx_moves_the_call_to_the_next_route(catalog: Catalog) -> None:
    upstream = FakeUpstream({"openai": [Step(500), Step(200)]})
    result = await _service(catalog, upstream).complete(_body())
    assert upstream.calls == [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1-mini")]
    assert [a.status for a in result.attempts] == [500, 200]
    # Billed as the fallback that served it; answered under the name the client used.
    assert result.model_id == "gpt-4.1-mini" and result.completion["model"] == PRIMARY


async def test_a_429_skips_the_rest_of_that_provider(catalog: Catalog) -> None:
    upstream = FakeUpstream(
        {"openai": [Step(429, headers={"retry-after": "7"})], "openrouter": [Step(200)]}
    )
    result = await _service(catalog, upstream).complete(_body())
    assert [p for p, _ in upstream.calls] == ["openai", "openrouter"]
    assert result.provider == "openrouter"


async def test_a_client_error_is_returned_without_failover(catalog: Catalog) -> None:
    upstream = FakeUpstream({"openai": [Step(400)]})
    with pytest.raises(AttemptsFailed) as failed:
        await _service(catalog, upstream).complete(_body())
    assert len(upstream.calls) == 1
    assert failed.value.error.status == 400  # type: ignore[attr-defined]


async def test_when_every_route_is_unreachable_the_last_error_is_a_504(catalog: Catalog) -> None:
    timeout = Step(unreachable=TimeoutError())
    upstream = FakeUpstream({"openai": [timeout, timeout], "openrouter": [timeout]})
    with pytest.raises(AttemptsFailed) as failed:
        await _service(catalog, upstream).complete(_body())
    assert len(failed.value.attempts) == 3
    assert failed.value.error.status == 504  # type: ignore[attr-defined]


async def test_an_open_breaker_skips_its_routes_without_calling(catalog: Catalog) -> None:
    breakers = Breakers(failure_threshold=1, cooldown_s=60)
    breakers.record_failure("openai", "gpt-4o-mini")  # the whole provider opens
    upstream = FakeUpstream({"openrouter": [Step(200)]})
    result = await _service(catalog, upstream, breakers=breakers).complete(_body())
    assert upstream.calls == [("openrouter", "deepseek/deepseek-chat")]
    assert result.provider == "openrouter"


async def test_a_slow_first_route_is_hedged_and_the_loser_cancelled(catalog: Catalog) -> None:
    upstream = FakeUpstream({"openai": [Step(delay_s=5), Step(200)]})
    result = await _service(catalog, upstream, hedge_ms=20).complete(_body())
    assert result.model_id == "gpt-4.1-mini"
    assert upstream.cancelled == ["openai"]
    statuses = sorted(a.status for a in result.attempts)
    assert statuses == [200, 499]  # the cancelled loser is recorded as client-closed


async def test_a_first_route_failing_before_the_hedge_delay_runs_the_partner_next(
    catalog: Catalog,
) -> None:
    upstream = FakeUpstream({"openai": [Step(503), Step(200)]})
    result = await _service(catalog, upstream, hedge_ms=10_000).complete(_body())
    assert [a.status for a in result.attempts] == [503, 200]
    assert upstream.cancelled == []


# -- a unary call whose client left: the edge cancels the RPC ----------------------------


class _Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, context: pb.CallContext, **fields: Any) -> None:
        self.records.append(fields)


async def _cancel_mid_flight(
    service: ChatService, upstream: FakeUpstream, body: dict[str, Any], in_flight: int
) -> dict[str, Any]:
    """Runs the router's ChatCompletion, cancels it once `in_flight` upstream requests are
    out (as gRPC does when the edge cancels), and returns the one usage record."""
    meter = _Recorder()
    servicer = RouterServicer(service._config, service, cast(Any, None), cast(Any, meter))
    context = pb.CallContext(request_id="req_1", account_id="acct_1", reservation_id="r")
    request = pb.ChatRequest(context=context, body=orjson.dumps(body))
    task = asyncio.ensure_future(servicer.ChatCompletion(request, cast(Any, None)))
    for _ in range(1_000):
        if len(upstream.calls) >= in_flight:
            break
        await asyncio.sleep(0.005)
    assert len(upstream.calls) == in_flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(meter.records) == 1
    return meter.records[0]


async def test_a_cancelled_unary_call_cancels_upstream_and_bills_the_prompt(
    catalog: Catalog,
) -> None:
    upstream = FakeUpstream({"openai": [Step(delay_s=30)]})
    body = _body(messages=[{"role": "user", "content": "Count the primes below one million."}])
    record = await _cancel_mid_flight(_service(catalog, upstream), upstream, body, 1)
    assert upstream.cancelled == ["openai"]
    model = catalog.chat(PRIMARY)
    assert model is not None
    prompt = chat_prompt_tokens(body, model)  # gpt-4o-mini: o200k, a real count
    assert prompt is not None and prompt > 10
    assert (record["status"], record["error_code"]) == (CLIENT_CLOSED, "client_closed")
    assert (record["provider"], record["model_id"]) == ("openai", PRIMARY)
    assert record["usage"] == TokenUsage(prompt_tokens=prompt, completion_tokens=0)
    assert [a.status for a in record["attempts"]] == [499]


async def test_a_cancelled_hedge_cancels_both_requests_and_bills_one_prompt(
    catalog: Catalog,
) -> None:
    upstream = FakeUpstream({"openai": [Step(delay_s=30), Step(delay_s=30)]})
    service = _service(catalog, upstream, hedge_ms=10)
    record = await _cancel_mid_flight(service, upstream, _body(), 2)
    assert sorted(upstream.cancelled) == ["openai", "openai"]
    assert [a.status for a in record["attempts"]] == [499, 499]
    assert record["model_id"] == PRIMARY and record["usage"].prompt_tokens > 0


async def test_a_call_cancelled_after_a_failed_attempt_bills_only_the_one_in_flight(
    catalog: Catalog,
) -> None:
    # The first route answered 503 (free); the fallback was in flight when the client left.
    upstream = FakeUpstream({"openai": [Step(503), Step(delay_s=30)]})
    record = await _cancel_mid_flight(_service(catalog, upstream), upstream, _body(), 2)
    assert [a.status for a in record["attempts"]] == [503, 499]
    assert record["model_id"] == "gpt-4.1-mini"
    assert record["usage"].prompt_tokens > 0


class _SlowStream:
    """An OpenAI stream that sends `words` chunks, then waits for more that never come."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, words: int) -> None:
        self._words = words
        self.closed = False

    async def read(self) -> bytes:
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        for n in range(self._words):
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "upstream",
                "choices": [{"index": 0, "delta": {"content": f"word{n} "}}],
            }
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        await asyncio.sleep(30)

    async def aclose(self) -> None:
        self.closed = True


class _StreamingUpstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__({})
        self.stream = _SlowStream(words=4)

    async def open_stream(
        self, destination: Destination, path: str, content: bytes, headers: Any = None
    ) -> Any:
        self.calls.append((destination.name, orjson.loads(content)["model"]))
        return self.stream


async def test_a_stream_closed_at_a_yield_is_metered_with_its_usage_at_once(
    catalog: Catalog,
) -> None:
    """gRPC closes the servicer's generator at a `yield` when the edge cancels while a chunk
    is on its way: the stream below must be closed and counted before the call is metered
    (it used to be left to the garbage collector, and the call metered with no usage)."""
    upstream = _StreamingUpstream()
    service = _service(catalog, upstream)
    meter = _Recorder()
    servicer = RouterServicer(service._config, service, cast(Any, None), cast(Any, meter))
    body = _body(stream=True, aig={"fallbacks": False})
    context = pb.CallContext(request_id="req_1", account_id="acct_1", reservation_id="r")
    events = cast(
        AsyncGenerator[pb.ChatStreamEvent, None],
        servicer.StreamChatCompletion(
            pb.ChatRequest(context=context, body=orjson.dumps(body)), cast(Any, None)
        ),
    )
    assert (await events.__anext__()).WhichOneof("event") == "start"
    assert (await events.__anext__()).WhichOneof("event") == "chunk"
    await events.aclose()
    assert upstream.stream.closed
    (record,) = meter.records
    assert (record["status"], record["error_code"]) == (CLIENT_CLOSED, "client_closed")
    model = catalog.chat(PRIMARY)
    assert model is not None
    assert record["usage"].prompt_tokens == chat_prompt_tokens(body, model)
    assert record["usage"].completion_tokens >= 2
