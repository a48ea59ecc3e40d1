"""Ledger rows, and the SQL literals they are written with."""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime

import orjson

from aig.events.v1 import events_pb2 as events


@dataclass(frozen=True, slots=True)
class UsageRow:
    event_id: str
    occurred_at: datetime
    request_id: str
    account_id: str
    key_id: str
    workspace_id: str
    endpoint: str
    model: str
    provider: str
    outcome: str
    http_status: int
    error_code: str
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int
    upstream_cost_nano_usd: int
    markup_basis_points: int
    billed_cost_nano_usd: int
    latency_ms: int
    streamed: bool
    attempts: str
    reservation_id: str

    @classmethod
    def from_event(cls, event: events.UsageEvent) -> UsageRow:
        succeeded = event.outcome == events.CALL_OUTCOME_SUCCEEDED
        attempts = [
            {
                "provider": attempt.provider,
                "upstream_model": attempt.upstream_model,
                "status": attempt.status,
                "latency_ms": attempt.latency_ms,
                # Only the attempt that served the call is billed; the others cost nothing.
                "billed": succeeded and index == len(event.attempts) - 1,
            }
            for index, attempt in enumerate(event.attempts)
        ]
        return cls(
            event_id=event.event_id,
            occurred_at=datetime.fromtimestamp(event.occurred_at_ms / 1000, UTC),
            request_id=event.request_id,
            account_id=event.account_id,
            key_id=event.key_id,
            workspace_id=event.workspace_id,
            endpoint=event.endpoint,
            model=event.model,
            provider=event.provider,
            outcome="succeeded" if succeeded else "failed",
            http_status=event.http_status,
            error_code=event.error_code,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            cached_prompt_tokens=event.cached_prompt_tokens,
            reasoning_tokens=event.reasoning_tokens,
            upstream_cost_nano_usd=event.upstream_cost_nano_usd if succeeded else 0,
            markup_basis_points=event.markup_basis_points,
            billed_cost_nano_usd=event.billed_cost_nano_usd if succeeded else 0,
            latency_ms=max(event.latency_ms, 0),
            streamed=event.streamed,
            attempts=orjson.dumps(attempts).decode(),
            reservation_id=event.reservation_id,
        )


COLUMNS = tuple(field.name for field in fields(UsageRow))


def literal(value: object) -> str:
    """A ClickHouse SQL literal. Values come from our own events, but are escaped anyway."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return f"toDateTime64('{stamp}', 3, 'UTC')"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def values_clause(rows: list[UsageRow]) -> str:
    return ",".join("(" + ",".join(literal(v) for v in astuple(row)) + ")" for row in rows)
