"""The usage ledger on both backends: the same SQL, the same answers, exact money."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_http import chdb_http_server
from sqlalchemy.ext.asyncio import async_sessionmaker

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from aig_common.money import NANO_PER_USD
from billing.ledger import (
    COLUMNS,
    ChdbLedger,
    ClickHouseServerLedger,
    SqlLedger,
    UsageRow,
    ledger_from_env,
)
from billing.ledger.rows import ledger_event_id
from billing.ledger.schema import BOOTSTRAP, MIGRATIONS, MIGRATIONS_TABLE
from billing.tiers import ROLLING_WINDOW, recompute_tiers
from controldb import KeyStore, create_engine_from_url, migrate
from controldb.models import Account
from controldb.money import Money

# Whole milliseconds, as events carry them, so row times compare exactly.
NOW = datetime.fromtimestamp(int(datetime.now(UTC).timestamp() * 1000) / 1000, UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MINI = "gpt-4o-mini"
SONNET = "claude-sonnet-4-5"
# Above 2**53: a sum that passed through a float anywhere would come back rounded.
BIG = 2**53 + 1


def _event(
    account: str,
    *,
    model: str = MINI,
    key: str = "key_a",
    billed: int = 1_000_003,
    ok: bool = True,
    at: datetime = NOW,
    event_id: str | None = None,
) -> events.UsageEvent:
    event = events.UsageEvent(
        event_id=event_id or str(uuid7()),
        occurred_at_ms=int(at.timestamp() * 1000),
        request_id=f"req_{uuid7().hex}",
        account_id=account,
        key_id=key,
        workspace_id="ws_1",
        endpoint="chat.completions",
        model=model,
        provider="openai",
        outcome=events.CALL_OUTCOME_SUCCEEDED if ok else events.CALL_OUTCOME_FAILED,
        http_status=200 if ok else 503,
        error_code="" if ok else "upstream_unavailable",
        prompt_tokens=10,
        completion_tokens=5,
        cached_prompt_tokens=2,
        reasoning_tokens=1,
        cache_write_prompt_tokens=3,
        cache_write_1h_prompt_tokens=1,
        upstream_cost_nano_usd=billed * 10 // 14,
        markup_basis_points=4000,
        billed_cost_nano_usd=billed,
        latency_ms=120,
        streamed=True,
    )
    event.attempts.append(events.Attempt(provider="openai", upstream_model=model, status=503))
    event.attempts.append(events.Attempt(provider="openrouter", upstream_model=model, status=200))
    return event


def _row(account: str, **kwargs: Any) -> UsageRow:
    return UsageRow.from_event(_event(account, **kwargs))


# --- schema and migrations ---------------------------------------------------------------


async def test_migrations_apply_once(ledger: SqlLedger) -> None:
    assert await ledger.migrate() == []
    rows = await ledger.query(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert [row["version"] for row in rows] == [version for version, _ in MIGRATIONS]


async def test_migrate_applies_only_what_is_missing(tmp_path: Path) -> None:
    ledger = ChdbLedger(tmp_path / "ledger")
    try:
        for statement in BOOTSTRAP:
            await ledger.execute(statement)
        first_version, first_statement = MIGRATIONS[0]
        await ledger.execute(first_statement)
        await ledger.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ({first_version})")

        assert await ledger.migrate() == [version for version, _ in MIGRATIONS[1:]]
        indexes = await ledger.query(
            "SELECT name FROM system.data_skipping_indices WHERE table = 'usage_events'"
        )
        assert indexes == [{"name": "request_id_bloom"}]
    finally:
        await ledger.close()


async def test_columns_have_the_designed_types(ledger: SqlLedger) -> None:
    columns = await ledger.query(
        "SELECT name, type FROM system.columns WHERE database = 'aig' AND table = 'usage_events'"
    )
    types = {column["name"]: column["type"] for column in columns}
    assert types["billed_cost_nano_usd"] == "Int64"
    assert types["upstream_cost_nano_usd"] == "Int64"
    assert types["prompt_tokens"] == "UInt64"
    assert types["occurred_at"] == "DateTime64(3, 'UTC')"
    assert types["outcome"] == "Enum8('succeeded' = 1, 'failed' = 2)"
    assert types["model"] == "LowCardinality(String)"
    assert types["event_id"] == "UUID"
    assert not any("Float" in kind or "Decimal" in kind for kind in types.values())
    engine = await ledger.query(
        "SELECT engine_full FROM system.tables WHERE database = 'aig' AND name = 'usage_events'"
    )
    assert "ReplacingMergeTree(inserted_at)" in engine[0]["engine_full"]
    assert "ORDER BY (account_id, occurred_at, event_id)" in engine[0]["engine_full"]


# --- writes ------------------------------------------------------------------------------


async def test_redelivered_events_count_once(ledger: SqlLedger) -> None:
    # No background merge may collapse the copies first: the reads must do it themselves.
    await ledger.execute("SYSTEM STOP MERGES aig.usage_events")
    row = _row("acct_dup", billed=1_000_003)
    await ledger.insert([row])
    await ledger.insert([row])  # the batch delivered again after a crash
    await ledger.insert([row, row])  # and a copy inside one batch
    assert await ledger.count_events("acct_dup") == 1
    summary = await ledger.usage_summary("acct_dup", NOW - HOUR, NOW + HOUR, "model")
    assert [(r["calls"], r["billed_cost_nano_usd"]) for r in summary] == [(1, 1_000_003)]
    assert await ledger.rolling_spend_nano_usd(since=NOW - HOUR) == {"acct_dup": 1_000_003}
    # Three parts hold a copy each (the engine already collapses copies inside one
    # block when it writes the part); only the reads collapse across parts.
    stored = await ledger.query(
        "SELECT count() AS n FROM aig.usage_events WHERE account_id = 'acct_dup'"
    )
    assert stored[0]["n"] == 3


async def test_failed_calls_are_recorded_at_no_cost(ledger: SqlLedger) -> None:
    await ledger.insert([_row("acct_f", ok=False, billed=999)])
    summary = await ledger.usage_summary("acct_f", NOW - HOUR, NOW + HOUR, "model")
    assert summary == [
        {
            "model": MINI,
            "calls": 1,
            "succeeded": 0,
            "failed": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cached_prompt_tokens": 2,
            "reasoning_tokens": 1,
            "cache_write_prompt_tokens": 3,
            "cache_write_1h_prompt_tokens": 1,
            "upstream_cost_nano_usd": 0,
            "billed_cost_nano_usd": 0,
            # Both attempts failed: the call was not served.
            "failed_attempts": 2,
        }
    ]


async def test_a_row_round_trips_every_column(ledger: SqlLedger) -> None:
    row = _row("acct_rt", billed=BIG)
    await ledger.insert([row])
    stored = await ledger.query(
        "SELECT * EXCEPT inserted_at FROM aig.usage_events FINAL WHERE account_id = 'acct_rt'"
    )
    expected = dict(zip(COLUMNS, row.as_tuple(), strict=True))
    expected["occurred_at"] = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    assert stored == [expected]
    assert stored[0]["attempts"] == (
        '[{"provider":"openai","upstream_model":"gpt-4o-mini","status":503,"latency_ms":0},'
        '{"provider":"openrouter","upstream_model":"gpt-4o-mini","status":200,"latency_ms":0}]'
    )


async def test_concurrent_batches_and_reads(ledger: SqlLedger) -> None:
    batches = [[_row("acct_cc", billed=batch) for _ in range(20)] for batch in range(1, 6)]
    await asyncio.gather(
        *(ledger.insert(batch) for batch in batches),
        *(ledger.count_events("acct_cc") for _ in range(5)),
    )
    assert await ledger.count_events("acct_cc") == 100
    spend = await ledger.rolling_spend_nano_usd("acct_cc", since=NOW - HOUR)
    assert spend == {"acct_cc": 20 * (1 + 2 + 3 + 4 + 5)}


async def test_an_empty_batch_writes_nothing(ledger: SqlLedger) -> None:
    await ledger.insert([])
    assert await ledger.count_events() == 0


# --- analytics ---------------------------------------------------------------------------


async def test_grouping_and_exact_sums(ledger: SqlLedger) -> None:
    await ledger.insert(
        [
            _row("acct_g", model=MINI, key="k1", billed=1),
            _row("acct_g", model=MINI, key="k2", billed=2),
            _row("acct_g", model=SONNET, key="k1", billed=BIG),
            _row("acct_g", model=SONNET, key="k1", billed=BIG),
            _row("acct_g", model=SONNET, at=NOW - DAY, billed=7),
            _row("acct_g", model=SONNET, at=NOW - 3 * DAY, billed=10**15),  # before start
            _row("acct_other", billed=10**12),
        ]
    )
    start, end = NOW - 2 * DAY, NOW + HOUR
    by_model = await ledger.usage_summary("acct_g", start, end, "model")
    assert [(r["model"], r["calls"], r["billed_cost_nano_usd"]) for r in by_model] == [
        (SONNET, 3, 2 * BIG + 7),
        (MINI, 2, 3),
    ]
    assert all(type(r["billed_cost_nano_usd"]) is int for r in by_model)
    by_key = await ledger.usage_summary("acct_g", start, end, "key")
    assert {r["key_id"]: r["calls"] for r in by_key} == {"k1": 3, "k2": 1, "key_a": 1}
    by_day = await ledger.usage_summary("acct_g", start, end, "day")
    assert [(r["day"], r["calls"]) for r in by_day] == [
        ((NOW - DAY).date().isoformat(), 1),
        (NOW.date().isoformat(), 4),
    ]


async def test_summary_range_is_half_open(ledger: SqlLedger) -> None:
    await ledger.insert([_row("acct_h", at=NOW), _row("acct_h", at=NOW + HOUR)])
    summary = await ledger.usage_summary("acct_h", NOW, NOW + HOUR, "model")
    assert summary[0]["calls"] == 1


async def test_recent_calls_are_one_accounts_newest_first_and_filtered(
    ledger: SqlLedger,
) -> None:
    await ledger.insert(
        [
            _row("acct_c", model=MINI, key="k1", at=NOW - 2 * HOUR, billed=BIG),
            _row("acct_c", model=SONNET, key="k2", at=NOW - HOUR, ok=False),
            _row("acct_c", model=MINI, key="k2", at=NOW),
            _row("acct_other", model=MINI, key="k1", at=NOW),
        ]
    )
    start, end = NOW - DAY, NOW + HOUR
    calls = await ledger.recent_calls("acct_c", start, end, {}, 10)
    assert [(c["model"], c["key_id"], c["outcome"]) for c in calls] == [
        (MINI, "k2", "succeeded"),
        (SONNET, "k2", "failed"),
        (MINI, "k1", "succeeded"),
    ]
    assert calls[2]["billed_cost_nano_usd"] == BIG and calls[0]["attempts"] == 2
    assert calls[0]["time"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    only_k1 = await ledger.recent_calls("acct_c", start, end, {"key_id": "k1"}, 10)
    assert [c["model"] for c in only_k1] == [MINI]
    failed = await ledger.recent_calls("acct_c", start, end, {"outcome": "failed"}, 10)
    assert [c["model"] for c in failed] == [SONNET]
    assert len(await ledger.recent_calls("acct_c", start, end, {}, 1)) == 1


async def test_unknown_grouping_is_refused(ledger: SqlLedger) -> None:
    with pytest.raises(ValueError, match="group_by"):
        await ledger.usage_summary("acct", NOW - HOUR, NOW, "provider; DROP TABLE x")


async def test_rolling_spend_counts_successes_inside_the_window(ledger: SqlLedger) -> None:
    await ledger.insert(
        [
            _row("acct_r", billed=5),
            _row("acct_r", billed=BIG, at=NOW - 29 * DAY),
            _row("acct_r", billed=100, ok=False),
            _row("acct_r", billed=1000, at=NOW - 31 * DAY),
            _row("acct_s", billed=70),
            _row("acct_failed_only", billed=70, ok=False),
        ]
    )
    since = NOW - 30 * DAY
    assert await ledger.rolling_spend_nano_usd(since=since) == {
        "acct_r": BIG + 5,
        "acct_s": 70,
    }
    assert await ledger.rolling_spend_nano_usd("acct_s", since=since) == {"acct_s": 70}
    assert await ledger.rolling_spend_nano_usd("acct_none", since=since) == {}


async def test_count_events_filters(ledger: SqlLedger) -> None:
    await ledger.insert(
        [
            _row("acct_c", ok=True),
            _row("acct_c", ok=False),
            _row("acct_c", at=NOW - 2 * DAY),
            _row("acct_d"),
        ]
    )
    assert await ledger.count_events() == 4
    assert await ledger.count_events("acct_c") == 3
    assert await ledger.count_events("acct_c", outcome="failed") == 1
    assert await ledger.count_events("acct_c", start=NOW - DAY) == 2
    assert await ledger.count_events(end=NOW - DAY) == 1


async def test_values_are_bound_not_spliced(ledger: SqlLedger) -> None:
    hostile = "acct_'q\\\t\n') OR 1=1 --"
    await ledger.insert([_row(hostile, billed=11), _row("acct_bystander", billed=13)])
    assert await ledger.count_events(hostile) == 1
    summary = await ledger.usage_summary(hostile, NOW - HOUR, NOW + HOUR, "key")
    assert [r["billed_cost_nano_usd"] for r in summary] == [11]
    assert await ledger.rolling_spend_nano_usd(hostile, since=NOW - HOUR) == {hostile: 11}


# --- the two backends agree --------------------------------------------------------------


async def test_both_backends_answer_alike(tmp_path: Path) -> None:
    rows = [
        _row("acct_x", model=model, key=key, billed=billed, ok=ok, at=at)
        for model, key, billed, ok, at in [
            (MINI, "k1", 17, True, NOW),
            (SONNET, "k2", BIG, True, NOW - DAY),
            (SONNET, "k2", 3, False, NOW),
            (MINI, "k3", 10**11, True, NOW - 40 * DAY),
        ]
    ]
    rows += [rows[0], rows[1]]  # redelivered
    rows.append(_row("acct_y", billed=23))

    async def answers_of(backend: SqlLedger) -> list[object]:
        await backend.migrate()
        await backend.insert(rows[:3])
        await backend.insert(rows[3:])
        start, end = NOW - 60 * DAY, NOW + HOUR
        found: list[object] = [
            await backend.usage_summary(account, start, end, group)
            for account in ("acct_x", "acct_y")
            for group in ("model", "key", "day")
        ]
        found.append(await backend.rolling_spend_nano_usd(since=NOW - 30 * DAY))
        found.append(await backend.rolling_spend_nano_usd("acct_x", since=NOW - 30 * DAY))
        found.append(await backend.count_events())
        found.append(await backend.count_events("acct_x", outcome="succeeded"))
        await backend.close()
        return found

    # chDB holds one engine per process, so the two backends run one after the other.
    embedded = await answers_of(ChdbLedger(tmp_path / "embedded"))
    with chdb_http_server(tmp_path / "server") as server:
        remote = await answers_of(ClickHouseServerLedger(server.url))
        # The remote answers came through clickhouse-connect's own paths: Native inserts,
        # compressed as it sends them, and server-side bound parameters.
        assert server.log.insert_formats == ["Native", "Native"]
        assert set(server.log.content_encodings) == {"lz4"}
        bound = {"account_id": "acct_x", "since": _text(NOW - 30 * DAY)}
        assert bound in server.log.bound_params

    assert remote == embedded
    assert embedded[6] == {"acct_x": BIG + 17, "acct_y": 23}
    assert embedded[8] == 5
    assert embedded[9] == 3


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# --- rows and configuration ----------------------------------------------------------------


def test_row_from_event_charges_failed_calls_nothing() -> None:
    row = _row("acct", ok=False, billed=500)
    assert (row.outcome, row.billed_cost_nano_usd, row.upstream_cost_nano_usd) == ("failed", 0, 0)
    assert row.occurred_at == NOW
    assert row.http_status == 503


def test_from_event_maps_every_field() -> None:
    # from_event passes the row's fields by position: a distinct value in every field of the
    # event shows each one landing in the column of its own name.
    event = events.UsageEvent(
        event_id="0190b3c2-7d1e-7a2b-9c3d-4e5f60718293",
        occurred_at_ms=1_764_000_000_123,
        request_id="req_distinct",
        account_id="acct_distinct",
        key_id="key_distinct",
        workspace_id="ws_distinct",
        endpoint="embeddings",
        model="model_distinct",
        provider="provider_distinct",
        outcome=events.CALL_OUTCOME_SUCCEEDED,
        http_status=201,
        error_code="code_distinct",
        prompt_tokens=11,
        completion_tokens=12,
        cached_prompt_tokens=13,
        reasoning_tokens=14,
        upstream_cost_nano_usd=15,
        markup_basis_points=16,
        billed_cost_nano_usd=17,
        latency_ms=18,
        streamed=True,
        reservation_id="resv_distinct",
        unit="unit_distinct",
        units=19,
        unit_price_nano_usd=20,
        cache_write_prompt_tokens=21,
        cache_write_1h_prompt_tokens=22,
    )
    event.attempts.append(
        events.Attempt(provider="p", upstream_model="m", status=200, latency_ms=23)
    )
    row = UsageRow.from_event(event)
    expected = {
        "event_id": event.event_id,
        "occurred_at": datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC),
        "request_id": "req_distinct",
        "account_id": "acct_distinct",
        "key_id": "key_distinct",
        "workspace_id": "ws_distinct",
        "endpoint": "embeddings",
        "model": "model_distinct",
        "provider": "provider_distinct",
        "outcome": "succeeded",
        "http_status": 201,
        "error_code": "code_distinct",
        "prompt_tokens": 11,
        "completion_tokens": 12,
        "cached_prompt_tokens": 13,
        "reasoning_tokens": 14,
        "upstream_cost_nano_usd": 15,
        "markup_basis_points": 16,
        "billed_cost_nano_usd": 17,
        "latency_ms": 18,
        "streamed": True,
        "attempts": '[{"provider":"p","upstream_model":"m","status":200,"latency_ms":23}]',
        "reservation_id": "resv_distinct",
        "unit": "unit_distinct",
        "units": 19,
        "unit_price_nano_usd": 20,
        "cache_write_prompt_tokens": 21,
        "cache_write_1h_prompt_tokens": 22,
    }
    assert set(expected) == set(COLUMNS)
    assert {name: getattr(row, name) for name in COLUMNS} == expected


def test_from_event_keeps_numbers_inside_their_columns() -> None:
    event = _event("acct")
    event.http_status = 70_000  # UInt16
    event.latency_ms = 2**40  # UInt32
    event.markup_basis_points = -1
    event.prompt_tokens = event.units = event.cache_write_1h_prompt_tokens = -5
    row = UsageRow.from_event(event)
    assert (row.http_status, row.latency_ms, row.markup_basis_points) == (0xFFFF, 2**32 - 1, 0)
    assert (row.prompt_tokens, row.units, row.cache_write_1h_prompt_tokens) == (0, 0, 0)
    event.http_status = event.latency_ms = -3
    row = UsageRow.from_event(event)
    assert (row.http_status, row.latency_ms) == (0, 0)


def test_a_non_uuid_event_id_maps_to_the_same_uuid_each_time() -> None:
    first = _row("acct", event_id="not-a-uuid")
    again = _row("acct", event_id="not-a-uuid")
    other = _row("acct", event_id="another")
    assert first.event_id == again.event_id != other.event_id
    assert len(first.event_id) == 36
    real = str(uuid7())
    assert _row("acct", event_id=real).event_id == real


def test_every_spelling_of_one_uuid_is_stored_as_the_same_event_id() -> None:
    # Canonical ids skip uuid.UUID's parsing; every other spelling it accepts must still come
    # out the same, or a redelivery spelled otherwise would escape deduplication.
    real = uuid7()
    spellings = [
        str(real),
        str(real).upper(),
        real.hex,
        f"{{{real}}}",
        f"urn:uuid:{real}",
    ]
    assert {ledger_event_id(spelling) for spelling in spellings} == {str(real)}
    # Shaped like a UUID but not hex: a name-based UUID, as for any other non-UUID id.
    not_hex = "g" + str(real)[1:]
    assert ledger_event_id(not_hex) == ledger_event_id(not_hex) != str(real)
    assert uuid.UUID(ledger_event_id(not_hex)).version == 5


async def test_ledger_from_env_picks_the_backend(tmp_path: Path) -> None:
    remote = ledger_from_env({"AIG_CLICKHOUSE_URL": "http://127.0.0.1:1/"}, tmp_path)
    assert isinstance(remote, ClickHouseServerLedger)  # connects on first use, not here
    embedded = ledger_from_env({}, tmp_path)
    try:
        assert isinstance(embedded, ChdbLedger)
        assert embedded.path == tmp_path / "ledger"
    finally:
        await embedded.close()


async def test_the_tier_job_falls_back_as_spend_leaves_the_window(tmp_path: Path) -> None:
    """The tier job over a real ledger and control DB: $60 spent 29 days ago is Growth
    today, and Starter once that spend is 30 days and a second old."""
    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    engine = create_engine_from_url(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    account = await KeyStore(sessions, b"pepper").create_account("tiered")
    money = Money(sessions)
    ledger = ChdbLedger(tmp_path / "ledger")
    try:
        await ledger.migrate()
        spent_at = NOW - 29 * DAY
        await ledger.insert([_row(account.id, billed=60 * NANO_PER_USD, at=spent_at)])
        growth = await recompute_tiers(ledger, money, now=NOW)
        assert growth["tiers"] == {account.id: "growth"}
        moved = spent_at + ROLLING_WINDOW + timedelta(seconds=1)
        starter = await recompute_tiers(ledger, money, now=moved)
        assert starter["tiers"] == {account.id: "starter"}
        async with sessions() as session:
            row = await session.get(Account, account.id)
            assert row is not None
            assert (row.markup_basis_points, row.rolling_30d_spend_nano_usd) == (4000, 0)
    finally:
        await ledger.close()
        await money.aclose()
        await engine.dispose()
