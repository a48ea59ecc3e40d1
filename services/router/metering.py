"""One UsageEvent per call the router receives, success or failure, priced in nano-USD."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aig.events.v1 import events_pb2 as events
from aig.router.v1 import router_pb2 as pb
from aig_common import tracing
from aig_common.contracts import USAGE_TOPIC
from aig_common.events import EventPublisher
from aig_common.ids import uuid7_text
from aig_common.money import apply_markup
from aig_common.usage import TokenUsage
from catalog.live import LiveCatalog
from catalog.models import TokenPrices

from .chat import AttemptRecord
from .config import RouterConfig

# Not an HTTP status a client saw: the client went away before the answer ended (nginx's 499).
CLIENT_CLOSED = 499


class Meter:
    def __init__(self, config: LiveCatalog[RouterConfig], publisher: EventPublisher) -> None:
        self._config = config
        self._publisher = publisher

    def record(
        self,
        context: pb.CallContext,
        *,
        endpoint: str,
        model_id: str,
        provider: str,
        status: int,
        error_code: str = "",
        usage: TokenUsage | None,
        streamed: bool,
        started_at: float,
        attempts: Sequence[AttemptRecord] = (),
    ) -> events.UsageEvent:
        """Prices the call and publishes its event. Only answered calls cost anything."""
        billable = status in (200, CLIENT_CLOSED) and usage is not None
        upstream_cost, prices = 0, None
        if billable and usage:
            upstream_cost, prices = self._upstream_cost(model_id, usage)
        billed = apply_markup(upstream_cost, context.markup_basis_points)
        if context.reserved_nano_usd > 0:
            # The reservation is what admission let this call spend; caps rely on it.
            billed = min(billed, context.reserved_nano_usd)
        usage = usage or TokenUsage()
        event = events.UsageEvent(
            event_id=uuid7_text(),
            occurred_at_ms=time.time_ns() // 1_000_000,
            request_id=context.request_id,
            account_id=context.account_id,
            key_id=context.key_id,
            workspace_id=context.workspace_id,
            endpoint=endpoint,
            model=model_id,
            provider=provider,
            outcome=events.CALL_OUTCOME_SUCCEEDED if billable else events.CALL_OUTCOME_FAILED,
            http_status=status,
            error_code=error_code,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cache_write_prompt_tokens=usage.cache_write_prompt_tokens,
            cache_write_1h_prompt_tokens=usage.cache_write_1h_prompt_tokens,
            upstream_cost_nano_usd=upstream_cost,
            markup_basis_points=context.markup_basis_points,
            billed_cost_nano_usd=billed,
            latency_ms=int((time.monotonic() - started_at) * 1000),
            streamed=streamed,
            reservation_id=context.reservation_id,
        )
        if prices is not None:
            event.prices.CopyFrom(
                events.TokenPrices(
                    input_nano_usd_per_token=prices.input_nano_usd_per_token,
                    cached_input_nano_usd_per_token=prices.cached_input_nano_usd_per_token,
                    output_nano_usd_per_token=prices.output_nano_usd_per_token,
                    cache_write_nano_usd_per_token=prices.cache_write,
                    cache_write_1h_nano_usd_per_token=prices.cache_write_1h,
                )
            )
        # Every upstream attempt stays with the call; only the one that served it is billed.
        event.attempts.extend(
            events.Attempt(
                provider=attempt.provider,
                upstream_model=attempt.upstream_id,
                status=attempt.status,
                latency_ms=attempt.latency_ms,
            )
            for attempt in attempts
        )
        # The router's span of this call when tracing is on (billing's settlement span joins
        # it), else the edge's traceparent passed on; the journal and spool keep headers.
        headers = tracing.kafka_headers(context.traceparent)
        self._publisher.publish(USAGE_TOPIC, context.account_id, event.SerializeToString(), headers)
        return event

    def _upstream_cost(self, model_id: str, usage: TokenUsage) -> tuple[int, TokenPrices | None]:
        """The call's cost at the prices in force now, and those prices."""
        catalog = self._config.current.catalog
        chat = catalog.chat(model_id)
        if chat is not None:
            return chat.price_nano_usd(usage), chat.prices_for_prompt(max(usage.prompt_tokens, 0))
        embedding = catalog.embedding(model_id)
        if embedding is None:
            return 0, None
        price = embedding.input_nano_usd_per_token
        return embedding.price_nano_usd(usage), TokenPrices(price, price, 0)


def error_code_of(body: dict[str, Any]) -> str:
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else ""
