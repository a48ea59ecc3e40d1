"""Every amount of money read from the control DB is a Python int, on every backend.

PostgreSQL's sum() over BIGINT is NUMERIC (a Decimal through asyncpg) while SQLite's is an
integer, so a query that forgets its cast works on SQLite and breaks integer-only code on
PostgreSQL (`usd()` formats with `:09d`; protobuf int64 fields refuse Decimals). Equality
cannot catch it — Decimal(1400) == 1400 — so these tests check `type(x) is int`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg import create_database
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.money import MAX_NANO_USD, NANO_PER_USD, usd
from controldb import KeyStore, create_engine_from_url, migrate
from controldb.limits import Limits
from controldb.models import Account, ApiKey, Workspace
from controldb.money import (
    LIMITS_QUERY,
    BalanceTooLarge,
    LimitExceeded,
    Money,
    RefundNotAllowed,
    UsageSettlement,
    limits_parameters,
)
from edge.admission import payment_required

# Amounts around the edges of what the columns hold: nothing, one nano-USD, and a balance
# past 2**53 nano-USD (where a float would lose the last digit).
BALANCES = {"zero": 0, "tiny": 1, "large": 9_007_199_254_740_993}


@dataclass
class Ledger:
    money: Money
    limits: Limits
    sessions: async_sessionmaker[AsyncSession]
    account_id: str
    key_id: str
    workspace_id: str


@pytest.fixture(params=["postgres", "sqlite", "sqlite_group_commit"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """A fresh account with a key in a workspace, on PostgreSQL and on both of SQLite's
    admission paths (the group-commit writer and the SQLAlchemy path PostgreSQL takes)."""
    if request.param == "postgres":
        url = await create_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    engine = create_engine_from_url(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"pepper")
    limits = Limits(sessions)
    account = await store.create_account("types")
    workspace = await limits.create_workspace(account.id, "w", {})
    key, _ = await store.create_key(account.id, "k")
    await limits.attach_key(key.id, workspace.id)
    money = Money(sessions, group_commit=request.param == "sqlite_group_commit")
    yield Ledger(money, limits, sessions, account.id, key.id, workspace.id)
    await money.aclose()
    await engine.dispose()


def _assert_ints(value: object, *names: str) -> None:
    for name in names:
        amount = getattr(value, name)
        assert type(amount) is int, f"{type(value).__name__}.{name} is {type(amount)!r}"


def _settlement(ledger: Ledger, event_id: str, billed: int, reservation: str) -> UsageSettlement:
    return UsageSettlement(
        event_id=event_id,
        account_id=ledger.account_id,
        key_id=ledger.key_id,
        workspace_id=ledger.workspace_id,
        reservation_id=reservation,
        billed_nano_usd=billed,
        occurred_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("balance", list(BALANCES))
async def test_limits_query_and_admission_read_ints(ledger: Ledger, balance: str) -> None:
    money = ledger.money
    if BALANCES[balance]:
        credited = await money.add_credits(ledger.account_id, "grant", BALANCES[balance])
        _assert_ints(credited, "balance_nano_usd")
        for entry in credited.entries:
            _assert_ints(entry, "amount_nano_usd")
    if balance == "large":
        admission = await money.admit(ledger.account_id, ledger.key_id, 1000)
        _assert_ints(admission, "amount_nano_usd", "markup_basis_points")
        await money.settle([_settlement(ledger, "evt-1", 700, admission.reservation_id)])
        await money.admit(ledger.account_id, ledger.key_id, 1000)  # left in flight
    async with ledger.sessions() as session:
        connection = await session.connection()
        row = (
            await connection.execute(
                LIMITS_QUERY,
                limits_parameters(ledger.account_id, ledger.key_id, datetime.now(UTC)),
            )
        ).one()
    for column, value in row._mapping.items():
        if column == "workspace_id":
            continue
        assert value is None or type(value) is int, f"{column} is {type(value)!r}"
    if balance == "large":
        assert row.held_account == row.held_key == row.held_workspace == 1400
        assert row.key_daily_spent == row.workspace_monthly_spent == 700
    # The account's balance is now too small for the call (or, when large, a cap is): the
    # 402 carries ints and renders as exact USD strings.
    if balance == "large":
        async with ledger.sessions() as session, session.begin():
            await session.execute(
                update(Workspace)
                .where(Workspace.id == ledger.workspace_id)
                .values(monthly_cap_nano_usd=2800)
            )
    with pytest.raises(LimitExceeded) as caught:
        await money.admit(ledger.account_id, ledger.key_id, 1000)
    limit = caught.value
    assert limit.code == ("workspace_monthly_cap" if balance == "large" else "insufficient_credits")
    _assert_ints(limit, "limit_nano_usd", "spent_nano_usd", "reserved_nano_usd", "needed_nano_usd")
    rendered = payment_required(limit).extra
    assert rendered is not None
    metadata = rendered["metadata"]
    assert metadata["requested_usd"] == usd(1400)
    if balance == "large":
        assert (metadata["spent_usd"], metadata["reserved_usd"]) == (usd(700), usd(1400))


@pytest.mark.parametrize("balance", list(BALANCES))
async def test_spend_settlement_tiers_and_refunds_read_ints(ledger: Ledger, balance: str) -> None:
    money = ledger.money
    if BALANCES[balance]:
        await money.add_credits(ledger.account_id, "purchase", BALANCES[balance])
    assert await money.add_credits(ledger.account_id, "grant", 10 * NANO_PER_USD)
    admission = await money.admit(ledger.account_id, ledger.key_id, 1000)
    settled = await money.settle([_settlement(ledger, "evt-1", 900, admission.reservation_id)])
    assert type(settled) is int and settled == 1
    await money.admit(ledger.account_id, ledger.key_id, 1000)  # left in flight
    for scope, scope_id in (
        ("key", ledger.key_id),
        ("workspace", ledger.workspace_id),
        ("account", ledger.account_id),
    ):
        spend = await money.scope_spend(scope, scope_id, (None, 5 * NANO_PER_USD))
        for period in (spend.daily, spend.monthly):
            _assert_ints(period, "spent_nano_usd", "reserved_nano_usd")
            assert (period.spent_nano_usd, period.reserved_nano_usd) == (900, 1400)
        _assert_ints(spend.monthly, "cap_nano_usd")
    # The refund rule sums recent purchases: its answer is an int too.
    with pytest.raises(RefundNotAllowed) as refused:
        await money.add_credits(ledger.account_id, "refund", BALANCES[balance] + 1)
    assert type(refused.value.refundable) is int
    assert refused.value.refundable == BALANCES[balance]
    await money.apply_tiers({ledger.account_id: BALANCES[balance]}, datetime.now(UTC))
    account = await ledger.limits.get("account", ledger.account_id)
    key = await ledger.limits.get("key", ledger.key_id)
    assert isinstance(account, Account) and isinstance(key, ApiKey)
    _assert_ints(account, "balance_nano_usd", "rolling_30d_spend_nano_usd", "markup_basis_points")
    assert account.balance_nano_usd == BALANCES[balance] + 10 * NANO_PER_USD - 900


async def test_a_balance_past_bigint_is_refused_not_overflowed(ledger: Ledger) -> None:
    money = ledger.money
    await money.add_credits(ledger.account_id, "grant", MAX_NANO_USD - 1)
    with pytest.raises(BalanceTooLarge):
        await money.add_credits(ledger.account_id, "grant", 2)
    topped = await money.add_credits(ledger.account_id, "grant", 1)
    assert topped.balance_nano_usd == MAX_NANO_USD
    assert type(topped.balance_nano_usd) is int
