"""The usage ledger on both backends: the same SQL, the same answers, exact money."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from chdb_http_endpoint import chdb_http_server

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from billing.usage_ledger import ChdbLedger, ClickHouseServerLedger, Ledger, UsageRow

NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)
CLAUDE = "claude-sonnet-4-5"


def _event(
    account: str,
    *,
    model: str = "gpt-4o-mini",
    key: str = "key_a",
    billed: int = 1_000_003,
    ok: bool = True,
    at: datetime = NOW,
    event_id: str | None = None,
) -> events.UsageEvent:
    event = events.UsageEvent(
        event_id=event_id or str(uuid7()),
        occurred_at_ms=int(at.timestamp() * 1000),
        account_id=account,
        key_id=key,
        endpoint="chat.completions",
        model=model,
        provider="openai",
        outcome=events.CALL_OUTCOME_SUCCEEDED if ok else events.CALL_OUTCOME_FAILED,
        http_status=200 if ok else 503,
        prompt_tokens=10,
        completion_tokens=5,
        upstream_cost_nano_usd=billed * 10 // 14,
        markup_basis_points=4000,
        billed_cost_nano_usd=billed,
    )
    event.attempts.append(events.Attempt(provider="openai", upstream_model=model, status=503))
    event.attempts.append(events.Attempt(provider="openrouter", upstream_model=model, status=200))
    return event


async def test_migrations_apply_once(ledger: Ledger) -> None:
    assert await ledger.migrate() == []


async def test_redelivered_events_count_once(ledger: Ledger) -> None:
    first = _event("acct_dup")
    rows = [UsageRow.from_event(first)]
    await ledger.insert(rows)
    await ledger.insert(rows)  # a redelivered batch
    assert await ledger.count_events("acct_dup") == {"succeeded": 1}
    summary = await ledger.usage_summary(
        "acct_dup", NOW - timedelta(hours=1), NOW + timedelta(hours=1), "model"
    )
    assert summary[0]["billed_cost_nano_usd"] == 1_000_003


async def test_failed_calls_are_recorded_at_no_cost(ledger: Ledger) -> None:
    await ledger.insert([UsageRow.from_event(_event("acct_f", ok=False, billed=999))])
    summary = await ledger.usage_summary(
        "acct_f", NOW - timedelta(hours=1), NOW + timedelta(hours=1), "model"
    )
    assert summary == [
        {
            "model": "gpt-4o-mini",
            "calls": 1,
            "succeeded": 0,
            "failed": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "billed_cost_nano_usd": 0,
            "upstream_cost_nano_usd": 0,
        }
    ]


async def test_grouping_and_exact_sums(ledger: Ledger) -> None:
    yesterday = NOW - timedelta(days=1)
    await ledger.insert(
        [
            UsageRow.from_event(_event("acct_g", model="gpt-4o-mini", key="k1", billed=1)),
            UsageRow.from_event(_event("acct_g", model="gpt-4o-mini", key="k2", billed=2)),
            UsageRow.from_event(
                _event("acct_g", model="claude-sonnet-4-5", key="k1", billed=2**40)
            ),
            UsageRow.from_event(
                _event("acct_g", model="claude-sonnet-4-5", at=yesterday, billed=7)
            ),
            UsageRow.from_event(_event("acct_other", billed=10**12)),
        ]
    )
    start, end = NOW - timedelta(days=2), NOW + timedelta(hours=1)
    by_model = await ledger.usage_summary("acct_g", start, end, "model")
    assert [(r["model"], r["calls"], r["billed_cost_nano_usd"]) for r in by_model] == [
        ("claude-sonnet-4-5", 2, 2**40 + 7),
        ("gpt-4o-mini", 2, 3),
    ]
    by_key = await ledger.usage_summary("acct_g", start, end, "key")
    assert {r["key_id"]: r["calls"] for r in by_key} == {"k1": 2, "k2": 1, "key_a": 1}
    by_day = await ledger.usage_summary("acct_g", start, end, "day")
    assert [r["calls"] for r in by_day] == [1, 3]
    assert [r["day"] for r in by_day] == sorted(r["day"] for r in by_day)


async def test_rolling_spend_counts_successes_inside_the_window(ledger: Ledger) -> None:
    await ledger.insert(
        [
            UsageRow.from_event(_event("acct_r", billed=5)),
            UsageRow.from_event(_event("acct_r", billed=100, ok=False)),
            UsageRow.from_event(_event("acct_r", billed=1000, at=NOW - timedelta(days=31))),
        ]
    )
    spend = await ledger.rolling_spend_nano_usd(since=NOW - timedelta(days=30))
    assert spend["acct_r"] == 5


async def test_attempts_are_kept_with_the_call(ledger: Ledger) -> None:
    event = _event("acct_a")
    await ledger.insert([UsageRow.from_event(event)])
    rows = await ledger.select(
        "SELECT attempts FROM aig.usage_events FINAL WHERE account_id = 'acct_a'"
    )
    assert '"provider":"openai"' in rows[0]["attempts"]
    assert '"billed":true' in rows[0]["attempts"]


async def test_both_backends_answer_alike(tmp_path: Path) -> None:
    rows = [
        UsageRow.from_event(_event("acct_x", model=model, key=key, billed=billed, ok=ok))
        for model, key, billed, ok in [
            ("gpt-4o-mini", "k1", 17, True),
            (CLAUDE, "k2", 10**11, True),
            (CLAUDE, "k2", 3, False),
        ]
    ]

    async def answers_of(backend: Ledger) -> list[object]:
        await backend.migrate()
        await backend.insert(rows)
        found: list[object] = [
            await backend.usage_summary("acct_x", NOW - HOUR, NOW + HOUR, group)
            for group in ("model", "key", "day")
        ]
        found.append(await backend.rolling_spend_nano_usd(since=NOW - HOUR))
        await backend.close()
        return found

    # chDB holds one data directory per process, so the two backends run one after the other.
    answers = [await answers_of(ChdbLedger(tmp_path / "embedded"))]
    with chdb_http_server(tmp_path / "server") as url:
        answers.append(await answers_of(ClickHouseServerLedger(url)))
    assert answers[0] == answers[1]
    assert answers[0][3] == {"acct_x": 10**11 + 17}
