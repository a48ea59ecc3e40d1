"""Credits, admission, settlement and tiers against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from controldb_fakes import UtcClock
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.money import NANO_PER_USD, apply_markup, parse_usd, usd
from controldb import KeyStore, create_engine_from_url
from controldb.admission import RoomToKeep
from controldb.group_commit import MAX_BATCH
from controldb.limits import Limits
from controldb.models import Account, ApiKey, Reservation, Workspace
from controldb.money import (
    REFUND_WINDOW,
    Admission,
    LimitExceeded,
    Money,
    RefundNotAllowed,
    UsageSettlement,
)
from controldb.tiers import tier_for

USD = NANO_PER_USD


@dataclass
class World:
    money: Money
    store: KeyStore
    account_id: str
    key_id: str
    sessions: async_sessionmaker[AsyncSession]

    async def balance(self) -> int:
        async with self.sessions() as session:
            account = await session.get(Account, self.account_id)
            assert account is not None
            return account.balance_nano_usd


@pytest.fixture
async def world(migrated_url: str) -> AsyncIterator[World]:
    engine = create_engine_from_url(migrated_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"pepper")
    account = await store.create_account("money")
    key, _ = await store.create_key(account.id, "k")
    money = Money(sessions)
    yield World(money, store, account.id, key.id, sessions)
    await money.aclose()
    await engine.dispose()


def _settlement(
    world: World, event_id: str, billed: int, reservation_id: str | None
) -> UsageSettlement:
    return UsageSettlement(
        event_id=event_id,
        account_id=world.account_id,
        key_id=world.key_id,
        workspace_id=None,
        reservation_id=reservation_id,
        billed_nano_usd=billed,
        occurred_at=datetime.now(UTC),
    )


async def _set_caps(world: World, model: Any, row_id: str, **caps: int) -> None:
    async with world.sessions() as session, session.begin():
        await session.execute(update(model).where(model.id == row_id).values(**caps))


def test_usd_strings_are_exact() -> None:
    assert usd(50 * USD) == "50.00"
    assert usd(123) == "0.000000123"
    assert usd(-1_500_000_000) == "-1.50"
    assert parse_usd("50.00") == 50 * USD
    assert parse_usd("0.000000001") == 1
    assert apply_markup(1000, 4000) == 1400
    assert apply_markup(1, 4000) == 2  # rounded up, never down
    for bad in ("1e400", "abc", "0.0000000001", 1.5, True):
        with pytest.raises(ValueError):
            parse_usd(bad)


async def test_purchase_packages_carry_bonus(world: World) -> None:
    result = await world.money.add_credits(world.account_id, "purchase", 50 * USD)
    assert [e.kind for e in result.entries] == ["purchase", "bonus"]
    assert result.balance_nano_usd == 54 * USD  # 8 % bonus
    await world.money.add_credits(world.account_id, "purchase", 7 * USD)  # no package, no bonus
    await world.money.add_credits(world.account_id, "grant", 1 * USD)
    assert await world.balance() == 62 * USD


async def test_refund_only_unspent_recent_purchases(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    with pytest.raises(RefundNotAllowed):
        await world.money.add_credits(
            world.account_id, "refund", 1 * USD
        )  # grants are not refundable
    await world.money.add_credits(world.account_id, "purchase", 20 * USD)
    await world.money.add_credits(world.account_id, "refund", 15 * USD)
    with pytest.raises(RefundNotAllowed) as caught:
        await world.money.add_credits(world.account_id, "refund", 6 * USD)
    assert caught.value.refundable == 5 * USD
    assert await world.balance() == 105 * USD


async def test_admit_settle_is_idempotent(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 1 * USD)
    admission = await world.money.admit(world.account_id, world.key_id, 1000)
    assert admission.amount_nano_usd == 1400 and admission.markup_basis_points == 4000
    item = _settlement(world, "evt-1", 700, admission.reservation_id)
    assert await world.money.settle([item]) == 1
    assert await world.money.settle([item, item]) == 0  # redelivery changes nothing
    assert await world.balance() == 1 * USD - 700
    async with world.sessions() as session:
        assert (await session.scalars(select(Reservation))).all() == []
    spend = await world.money.scope_spend("key", world.key_id, (None, None))
    assert spend.daily.spent_nano_usd == 700 and spend.monthly.spent_nano_usd == 700


async def test_a_batch_partly_settled_before_settles_only_its_new_events(world: World) -> None:
    """Redelivery mixed with new events (a consumer rebalance): the old ones change nothing,
    the new ones count once, duplicates inside the batch too. On SQLite the batch's writes
    are worked out before the lock assuming nothing was settled before; this catches a
    plan that is not redone when something was."""
    await world.money.add_credits(world.account_id, "grant", 1 * USD)
    old = _settlement(world, "old", 700, None)
    assert await world.money.settle([old]) == 1
    new = replace(_settlement(world, "new", 300, None), workspace_id="ws")
    assert await world.money.settle([old, new, new]) == 1
    assert await world.money.settle([new, old]) == 0
    assert await world.balance() == 1 * USD - 1000
    key_spend = await world.money.scope_spend("key", world.key_id, (None, None))
    assert key_spend.daily.spent_nano_usd == 1000
    workspace_spend = await world.money.scope_spend("workspace", "ws", (None, None))
    assert workspace_spend.daily.spent_nano_usd == 300


async def test_insufficient_credits_counts_live_reservations(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 2800)
    await world.money.admit(world.account_id, world.key_id, 1000)  # holds 1400
    await world.money.admit(world.account_id, world.key_id, 1000)  # holds 1400: exactly spent
    with pytest.raises(LimitExceeded) as caught:
        await world.money.admit(world.account_id, world.key_id, 1)
    assert caught.value.code == "insufficient_credits"


async def test_an_admission_tells_the_room_its_tightest_limit_leaves(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 10_000)
    first = await world.money.admit(world.account_id, world.key_id, 1000)  # holds 1400
    assert first.headroom_nano_usd == 10_000 - 1400  # the balance is the only limit
    await _set_caps(world, ApiKey, world.key_id, daily_cap_nano_usd=5000)
    second = await world.money.admit(world.account_id, world.key_id, 1000)
    assert second.headroom_nano_usd == 5000 - 2 * 1400  # the key's daily cap binds
    await _set_caps(world, Account, world.account_id, monthly_cap_nano_usd=4500)
    third = await world.money.admit(world.account_id, world.key_id, 100)  # holds 140
    assert third.headroom_nano_usd == 4500 - 2 * 1400 - 140  # now the account's monthly


@pytest.mark.parametrize("scope", ["key", "workspace", "account"])
async def test_admitting_several_at_once_decides_as_one_at_a_time_would(
    world: World, migrated_url: str, scope: str
) -> None:
    """admit_many (the edge's refills) grants what that many admissions in a row would:
    each counts the ones before it against the key's, the workspace's and the account's
    caps, with the same headroom, and it stops at the first that would not fit. On SQLite
    through both admission paths."""
    limits = Limits(world.sessions)
    async for money, account_id, workspace_id in _on_each_admission_path(world, migrated_url):
        key_id = (await world.store.create_key(account_id, "k"))[0].id
        await limits.attach_key(key_id, workspace_id)
        scope_id = {"key": key_id, "workspace": workspace_id, "account": account_id}[scope]
        cap = 5 * 1400 + 700  # room for five calls of 1,400 and half of a sixth
        await limits.set_caps(scope, scope_id, {"daily_cap_nano_usd": cap})
        first = await money.admit(account_id, key_id, 1000)

        many = await money.admit_many(account_id, key_id, 1000, 10)

        assert [a.amount_nano_usd for a in many] == [1400] * 4
        assert [a.headroom_nano_usd for a in [first, *many]] == [
            cap - held * 1400 for held in range(1, 6)
        ]
        assert len({a.reservation_id for a in [first, *many]}) == 5
        with pytest.raises(LimitExceeded) as caught:
            await money.admit_many(account_id, key_id, 1000, 3)
        assert caught.value.code == f"{scope}_daily_cap"
        assert caught.value.reserved_nano_usd == 5 * 1400
        async with world.sessions() as session:
            held = await session.scalars(
                select(Reservation.amount_nano_usd).where(Reservation.key_id == key_id)
            )
            assert list(held) == [1400] * 5


async def test_reserving_ahead_takes_only_what_leaves_room_to_spare(
    world: World, migrated_url: str
) -> None:
    """Reserving ahead (the edge's refills) a reservation is granted only while the room it
    leaves is RoomToKeep's factor times what would then be held ahead, so a refill never
    holds room it would give back at once; none for a key with an rpm_limit, whose window
    is not counted either."""
    async for money, account_id, _ in _on_each_admission_path(world, migrated_url):
        key_id = (await world.store.create_key(account_id, "k"))[0].id
        await _set_caps(world, ApiKey, key_id, daily_cap_nano_usd=20 * 1400)
        await money.admit(account_id, key_id, 1000)  # a call: 19 calls of room left

        # Room left after each: 18, 17, 16 calls; wanted: 8, 16, 24 calls' worth.
        ahead = await money.admit_many(account_id, key_id, 1000, 5, RoomToKeep(8, 0))
        assert [a.headroom_nano_usd for a in ahead] == [18 * 1400, 17 * 1400]
        # With one already on the shelf the second would need 24 calls' worth, not 16.
        more = await money.admit_many(account_id, key_id, 1000, 5, RoomToKeep(8, 1))
        assert [a.headroom_nano_usd for a in more] == [16 * 1400]
        # With three ahead already, even the first would need 32 calls' worth: none.
        assert await money.admit_many(account_id, key_id, 1000, 5, RoomToKeep(8, 3)) == []

        await _set_caps(world, ApiKey, key_id, daily_cap_nano_usd=10**12, rpm_limit=100)
        assert await money.admit_many(account_id, key_id, 1000, 5, RoomToKeep(8, 0)) == []
        async with world.sessions() as session:
            key = await session.get(ApiKey, key_id)
            assert key is not None and key.rpm_current == 0  # the refill counted no request
            held = await session.scalars(
                select(Reservation.amount_nano_usd).where(Reservation.key_id == key_id)
            )
            assert list(held) == [1400] * 4


async def test_reservations_admitted_ahead_say_until_when_they_may_wait_for_a_call(
    world: World, migrated_url: str
) -> None:
    """What a call refused for the room held ahead waits for (edge.admission): the latest
    shelved_until of the account's rows still held, past or not; a call's own row has none."""
    async for money, account_id, _ in _on_each_admission_path(world, migrated_url):
        key_id = (await world.store.create_key(account_id, "k"))[0].id
        await money.admit(account_id, key_id, 1000)
        assert await money.shelved_until(account_id) is None

        before = datetime.now(UTC)
        five_s = RoomToKeep(8, 0, shelved_for=timedelta(seconds=5))
        ahead = await money.admit_many(account_id, key_id, 1000, 2, five_s)
        after = datetime.now(UTC)
        until = await money.shelved_until(account_id)
        assert len(ahead) == 2
        assert until is not None
        assert before + timedelta(seconds=5) <= until <= after + timedelta(seconds=5)

        for admission in ahead:
            await money.release(admission.reservation_id)
        (due_now,) = await money.admit_many(account_id, key_id, 1000, 1, RoomToKeep(8, 0))
        # Past its time and still held (its edge may be giving it back right now): counted.
        until = await money.shelved_until(account_id)
        assert until is not None and until <= datetime.now(UTC)
        await money.release(due_now.reservation_id)
        assert await money.shelved_until(account_id) is None


async def test_a_key_with_an_rpm_limit_is_admitted_one_at_a_time(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    await _set_caps(world, ApiKey, world.key_id, rpm_limit=10)
    many = await world.money.admit_many(world.account_id, world.key_id, 1000, 5)
    assert len(many) == 1 and many[0].rate is not None
    assert await _live_reservations(world) == 1


async def test_expired_reservations_stop_counting(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 1400)
    held = await world.money.admit(world.account_id, world.key_id, 1000)
    with pytest.raises(LimitExceeded):
        await world.money.admit(world.account_id, world.key_id, 1000)
    async with world.sessions() as session, session.begin():
        await session.execute(
            update(Reservation)
            .where(Reservation.id == held.reservation_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await world.money.admit(world.account_id, world.key_id, 1000)).amount_nano_usd == 1400


async def test_expired_reservations_are_purged_and_a_late_settlement_still_settles(
    world: World,
) -> None:
    await world.money.add_credits(world.account_id, "grant", 10_000)
    orphan = await world.money.admit(world.account_id, world.key_id, 1000)
    live = await world.money.admit(world.account_id, world.key_id, 1000)
    async with world.sessions() as session, session.begin():
        await session.execute(
            update(Reservation)
            .where(Reservation.id == orphan.reservation_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await world.money.purge_expired_reservations() == 1
    assert await world.money.purge_expired_reservations() == 0
    async with world.sessions() as session:
        left = (await session.scalars(select(Reservation.id))).all()
    assert left == [live.reservation_id]
    # The orphan's usage event arrives after all: it is billed, its reservation already gone.
    settled = await world.money.settle([_settlement(world, "evt_late", 700, orphan.reservation_id)])
    assert settled == 1
    assert await world.balance() == 10_000 - 700


async def _on_each_admission_path(
    world: World, migrated_url: str
) -> AsyncIterator[tuple[Money, str, str]]:
    """A Money on each admission path the database has (on SQLite a transaction per call,
    then the group commit; on PostgreSQL its own), each with a funded account of its own
    and a workspace in it: (money, account id, workspace id). Each Money is closed after
    its turn."""
    limits = Limits(world.sessions)
    for group_commit in [False, True] if migrated_url.startswith("sqlite") else [True]:
        money = Money(world.sessions, group_commit=group_commit)
        account = await world.store.create_account(f"path-{group_commit}")
        await money.add_credits(account.id, "grant", 100 * USD)
        workspace = await limits.create_workspace(account.id, "w", {})
        try:
            yield money, account.id, workspace.id
        finally:
            await money.aclose()


@pytest.mark.parametrize(
    ("table", "column", "code"),
    [
        ("key", "daily_cap_nano_usd", "key_daily_cap"),
        ("key", "monthly_cap_nano_usd", "key_monthly_cap"),
        ("account", "daily_cap_nano_usd", "account_daily_cap"),
        ("account", "monthly_cap_nano_usd", "account_monthly_cap"),
    ],
)
async def test_each_cap_has_its_code(world: World, table: str, column: str, code: str) -> None:
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    model = ApiKey if table == "key" else Account
    row_id = world.key_id if table == "key" else world.account_id
    async with world.sessions() as session, session.begin():
        await session.execute(update(model).where(model.id == row_id).values({column: 3000}))
    admission = await world.money.admit(world.account_id, world.key_id, 1000)
    await world.money.settle([_settlement(world, "e1", 1400, admission.reservation_id)])
    await world.money.admit(world.account_id, world.key_id, 1000)  # 1400 + 1400 <= 3000
    with pytest.raises(LimitExceeded) as caught:
        await world.money.admit(world.account_id, world.key_id, 1000)
    assert caught.value.code == code
    assert caught.value.limit_nano_usd == 3000
    assert caught.value.spent_nano_usd == 1400 and caught.value.reserved_nano_usd == 1400
    assert caught.value.resets_at is not None


async def test_each_scope_counts_only_its_own_reservations_in_flight(
    world: World, migrated_url: str
) -> None:
    """Key A and key B share a workspace, key C has none, each with a call in flight: a
    key's cap counts its own reservation, the workspace's counts A's and B's, the
    account's all three (LIMITS_QUERY reads their running totals). On SQLite, through both
    admission paths: a transaction per call and the group commit."""
    limits = Limits(world.sessions)
    async for money, account_id, workspace_id in _on_each_admission_path(world, migrated_url):
        keys = [(await world.store.create_key(account_id, name))[0].id for name in "abc"]
        await limits.attach_key(keys[0], workspace_id)
        await limits.attach_key(keys[1], workspace_id)
        held = [
            (await money.admit(account_id, key_id, upstream)).amount_nano_usd
            for key_id, upstream in zip(keys, (1_000, 20_000, 300_000), strict=True)
        ]
        await limits.set_caps("key", keys[0], {"daily_cap_nano_usd": 1})
        await limits.set_caps("workspace", workspace_id, {"daily_cap_nano_usd": 1})
        await limits.set_caps("account", account_id, {"daily_cap_nano_usd": 1})

        refused = {}
        for key_id in keys:
            with pytest.raises(LimitExceeded) as caught:
                await money.admit(account_id, key_id, 1_000)
            refused[caught.value.code] = caught.value.reserved_nano_usd

        assert refused == {
            "key_daily_cap": held[0],
            "workspace_daily_cap": held[0] + held[1],
            "account_daily_cap": sum(held),
        }


async def _totals_and_rows(world: World) -> tuple[dict[str, int], dict[str, int]]:
    """Every account's, key's and workspace's running total (`held_nano_usd`), and the sum
    of the reservation rows naming it, both by "table:id"."""
    totals: dict[str, int] = {}
    rows: dict[str, int] = {}
    async with world.sessions() as session:
        for model, column in (
            (Account, Reservation.account_id),
            (ApiKey, Reservation.key_id),
            (Workspace, Reservation.workspace_id),
        ):
            table = model.__tablename__
            for row_id, held in await session.execute(select(model.id, model.held_nano_usd)):
                totals[f"{table}:{row_id}"] = held
                rows[f"{table}:{row_id}"] = 0
            summed = select(column, func.sum(Reservation.amount_nano_usd)).group_by(column)
            for named, amount in await session.execute(summed.where(column.is_not(None))):
                rows[f"{table}:{named}"] = int(amount)
    return totals, rows


async def test_running_totals_follow_every_change_to_the_reservations(
    world: World, migrated_url: str
) -> None:
    """The totals admission reads (migration 0010's triggers) equal the rows they stand
    for after every way a reservation is made, changed or ended: admitted on each path,
    released, settled (billed or not, twice), its hold extended, expired and purged, and
    moved by hand to another amount, key and workspace."""
    limits = Limits(world.sessions)
    workspace = await limits.create_workspace(world.account_id, "w", {})
    other_key = (await world.store.create_key(world.account_id, "in-workspace"))[0].id
    await limits.attach_key(other_key, workspace.id)
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    paths = [world.money]
    if migrated_url.startswith("sqlite"):
        paths.append(Money(world.sessions, group_commit=False))
    admitted = [
        await money.admit(world.account_id, key_id, upstream)
        for money in paths
        for key_id, upstream in ((world.key_id, 1_000), (other_key, 20_000), (other_key, 300))
    ]
    totals, rows = await _totals_and_rows(world)
    assert totals == rows
    assert totals[f"accounts:{world.account_id}"] == sum(a.amount_nano_usd for a in admitted)
    assert totals[f"workspaces:{workspace.id}"] > 0

    await world.money.release(admitted[0].reservation_id)
    in_workspace = replace(
        _settlement(world, "evt_ws", 5_000, admitted[1].reservation_id),
        key_id=other_key,
        workspace_id=workspace.id,
    )
    for _ in range(2):  # a redelivered batch releases nothing more
        await world.money.settle([in_workspace, _settlement(world, "evt_failed", 0, None)])
    await world.money.settle([_settlement(world, "evt_zero", 0, admitted[2].reservation_id)])
    totals, rows = await _totals_and_rows(world)
    assert totals == rows

    moved = await world.money.admit(world.account_id, other_key, 4_000)
    expiring = await world.money.admit(world.account_id, other_key, 9_000)
    async with world.sessions() as session, session.begin():
        await session.execute(
            update(Reservation)
            .where(Reservation.id == moved.reservation_id)
            .values(amount_nano_usd=777, key_id=world.key_id, workspace_id=None)
        )
        await session.execute(
            update(Reservation)
            .where(Reservation.id == expiring.reservation_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    totals, rows = await _totals_and_rows(world)
    assert totals == rows
    assert totals[f"api_keys:{world.key_id}"] >= 777
    assert await world.money.purge_expired_reservations() == 1
    totals, rows = await _totals_and_rows(world)
    assert totals == rows
    # Left in the workspace: the second path's two calls of the workspace's key, if any
    # (the moved one left it, the expired one was purged).
    second_path = admitted[4:6] if len(paths) > 1 else []
    assert totals[f"workspaces:{workspace.id}"] == sum(a.amount_nano_usd for a in second_path)
    for money in paths[1:]:
        await money.aclose()


async def test_concurrent_admissions_never_exceed_the_cap(world: World) -> None:
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    async with world.sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == world.key_id).values(daily_cap_nano_usd=14_000)
        )

    async def attempt() -> int:
        try:
            return (await world.money.admit(world.account_id, world.key_id, 1000)).amount_nano_usd
        except LimitExceeded:
            return 0

    held = await asyncio.gather(*(attempt() for _ in range(40)))
    assert sum(held) == 14_000  # exactly ten of forty fit
    assert held.count(0) == 30


async def _live_reservations(world: World) -> int:
    async with world.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Reservation)) or 0)


@pytest.mark.parametrize("per_transaction", [1, 3])
async def test_an_abandoned_admission_holds_nothing(world: World, per_transaction: int) -> None:
    """A caller cancelled after its admission committed but before it was answered (the
    client hung up at the worst moment) must not leave its worst case reserved until
    expiry. The `admissions_committed` seam holds every admitting transaction at exactly
    that point while the callers are cancelled. On SQLite an admission can only be in
    flight while it waits for the writer thread, so another writer holds the lock until
    every admission is queued behind it."""
    await world.money.add_credits(world.account_id, "grant", 100 * USD)
    committed = threading.Event()
    proceed = threading.Event()
    counts: list[int] = []

    def hold_at_commit(admitted: int) -> None:
        counts.append(admitted)
        committed.set()
        assert proceed.wait(30), "the test never let the committed admissions go"

    money = Money(world.sessions, admissions_committed=hold_at_commit)
    engine = world.sessions.kw["bind"]
    blocker = None
    if engine.dialect.name == "sqlite":
        blocker = sqlite3.connect(engine.url.database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    calls = 20
    attempts = [
        asyncio.create_task(money.admit_many(world.account_id, world.key_id, 1000, per_transaction))
        for _ in range(calls)
    ]
    try:
        # One turn of the loop runs each task up to its first wait: on SQLite that is the
        # writer thread's queue (the inline attempt fails at once on the held lock).
        await asyncio.sleep(0)
        if blocker is not None:
            blocker.execute("COMMIT")
        assert await asyncio.to_thread(committed.wait, 30)
        for attempt in attempts:
            attempt.cancel()
    finally:
        proceed.set()
        if blocker is not None:
            blocker.close()
    for attempt in attempts:
        with pytest.raises(asyncio.CancelledError):
            await attempt
    # Two releases of nothing as barriers (on SQLite they queue behind the writer's work):
    # when the first is answered, the cancelled admissions have been delivered and their
    # own releases queued; when the second is, those releases have run. On PostgreSQL,
    # aclose waits for the abandoned transactions and their releases.
    for _ in range(2):
        await money.release("resv_barrier")
    await money.aclose()
    # Every cancelled call had reached its commit point with all it asked for.
    assert sum(counts) == calls * per_transaction
    assert await _live_reservations(world) == 0
    kept = await world.money.admit(world.account_id, world.key_id, 1000)
    assert await _live_reservations(world) == 1
    await world.money.release(kept.reservation_id)
    assert await _live_reservations(world) == 0


async def test_a_burst_of_admissions_sees_each_other(world: World) -> None:
    """On SQLite a burst is admitted in shared transactions (group commit); on either
    backend each admission still counts every reservation made before it."""
    await world.money.add_credits(world.account_id, "grant", 7_000)  # five calls of 1,400
    burst = MAX_BATCH * 2
    outcomes = await asyncio.gather(
        *(world.money.admit(world.account_id, world.key_id, 1000) for _ in range(burst)),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if isinstance(o, Admission)]
    refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
    assert len(admitted) == 5 and len(refused) == burst - 5
    assert {r.code for r in refused} == {"insufficient_credits"}


# Group commit is SQLite's admission path; PostgreSQL's row locks are covered above.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_admissions_wait_for_a_held_write_lock_then_commit_together(
    world: World,
) -> None:
    """SQLite: while another writer holds the lock, admissions cannot run at once on the
    event loop (that connection never waits); they queue for the writer thread, which
    admits them together once the lock is free, each still seeing the ones before it."""
    engine = world.sessions.kw["bind"]
    await world.money.add_credits(world.account_id, "grant", 7_000)  # five calls of 1,400
    blocker = sqlite3.connect(engine.url.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        burst = asyncio.gather(
            *(world.money.admit(world.account_id, world.key_id, 1000) for _ in range(20)),
            return_exceptions=True,
        )
        await asyncio.sleep(0.3)
        assert not burst.done()  # nobody went around the lock
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    outcomes = await burst
    assert sum(isinstance(o, Admission) for o in outcomes) == 5
    assert sum(isinstance(o, LimitExceeded) for o in outcomes) == 15


async def test_tiers_follow_rolling_spend(world: World) -> None:
    tiers = await world.money.apply_tiers({world.account_id: 60 * USD}, datetime.now(UTC))
    assert tiers[world.account_id].name == "growth"
    async with world.sessions() as session:
        account = await session.get(Account, world.account_id)
        assert account is not None
        assert (account.tier, account.markup_basis_points) == ("growth", 3000)
    await world.money.add_credits(world.account_id, "grant", 1 * USD)
    assert (await world.money.admit(world.account_id, world.key_id, 1000)).amount_nano_usd == 1300


@pytest.fixture
async def clocked(world: World) -> AsyncIterator[tuple[Money, UtcClock]]:
    """The world's database through a Money whose clock the test sets."""
    clock = UtcClock(datetime(2026, 3, 14, 12, 0, tzinfo=UTC))
    money = Money(world.sessions, clock=clock)
    yield money, clock
    await money.aclose()


def _ended_at(
    world: World, event_id: str, billed: int, reservation_id: str, at: datetime
) -> UsageSettlement:
    return replace(_settlement(world, event_id, billed, reservation_id), occurred_at=at)


async def test_a_daily_cap_resets_at_utc_midnight(
    world: World, clocked: tuple[Money, UtcClock]
) -> None:
    """A call counts toward the UTC day in which it ended (its usage event's time); while in
    flight its reservation weighs on every day's cap, the next one included."""
    money, clock = clocked
    await money.add_credits(world.account_id, "grant", 100 * USD)
    await _set_caps(world, ApiKey, world.key_id, daily_cap_nano_usd=3000)
    clock.set(datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC))
    before = await money.admit(world.account_id, world.key_id, 1000)  # holds 1,400
    across = await money.admit(world.account_id, world.key_id, 1000)  # 2,800 <= 3,000
    with pytest.raises(LimitExceeded) as caught:
        await money.admit(world.account_id, world.key_id, 1000)
    assert caught.value.resets_at == datetime(2026, 3, 15, tzinfo=UTC)

    clock.set(datetime(2026, 3, 15, 0, 0, 1, tzinfo=UTC))
    # Ended before midnight, settled after it: it counts yesterday.
    ended = datetime(2026, 3, 14, 23, 59, 59, 500_000, tzinfo=UTC)
    await money.settle([_ended_at(world, "day-1", 1400, before.reservation_id, ended)])
    # Yesterday's 1,400 no longer counts; the call still in flight does.
    after = await money.admit(world.account_id, world.key_id, 1000)
    with pytest.raises(LimitExceeded) as caught:
        await money.admit(world.account_id, world.key_id, 1000)
    assert caught.value.code == "key_daily_cap"
    assert (caught.value.spent_nano_usd, caught.value.reserved_nano_usd) == (0, 2800)
    assert caught.value.resets_at == datetime(2026, 3, 16, tzinfo=UTC)

    # Reserved before midnight, ended after it: it counts today.
    ended = datetime(2026, 3, 15, 0, 0, 0, 500_000, tzinfo=UTC)
    await money.settle([_ended_at(world, "day-2", 1400, across.reservation_id, ended)])
    spend = await money.scope_spend("key", world.key_id, (3000, None))
    assert (spend.daily.spent_nano_usd, spend.daily.reserved_nano_usd) == (1400, 1400)
    assert spend.monthly.spent_nano_usd == 2800  # both ended in March
    await money.release(after.reservation_id)


async def test_a_monthly_cap_resets_at_the_utc_month_boundary(
    world: World, clocked: tuple[Money, UtcClock]
) -> None:
    money, clock = clocked
    await money.add_credits(world.account_id, "grant", 100 * USD)
    await _set_caps(world, Account, world.account_id, monthly_cap_nano_usd=2000)
    clock.set(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC))
    late = await money.admit(world.account_id, world.key_id, 1000)
    with pytest.raises(LimitExceeded) as caught:
        await money.admit(world.account_id, world.key_id, 1000)
    assert caught.value.code == "account_monthly_cap"
    assert caught.value.resets_at == datetime(2026, 4, 1, tzinfo=UTC)

    clock.set(datetime(2026, 4, 1, tzinfo=UTC))
    # Ended in March, settled in April: it counts in March, so April starts empty.
    ended = datetime(2026, 3, 31, 23, 59, 59, 900_000, tzinfo=UTC)
    await money.settle([_ended_at(world, "march", 1400, late.reservation_id, ended)])
    april = await money.admit(world.account_id, world.key_id, 1000)
    with pytest.raises(LimitExceeded) as caught:
        await money.admit(world.account_id, world.key_id, 1000)
    assert (caught.value.spent_nano_usd, caught.value.reserved_nano_usd) == (0, 1400)
    assert caught.value.resets_at == datetime(2026, 5, 1, tzinfo=UTC)
    await money.release(april.reservation_id)


async def test_refunds_stop_at_the_30_day_edge_and_never_include_bonuses(
    world: World, clocked: tuple[Money, UtcClock]
) -> None:
    money, clock = clocked
    bought_at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    clock.set(bought_at)
    result = await money.add_credits(world.account_id, "purchase", 50 * USD)
    assert result.balance_nano_usd == 54 * USD  # 8 % bonus
    with pytest.raises(RefundNotAllowed) as caught:
        await money.add_credits(world.account_id, "refund", 50 * USD + 1)
    assert caught.value.refundable == 50 * USD  # the bonus is not refundable

    clock.set(bought_at + REFUND_WINDOW - timedelta(seconds=1))  # the window's last second
    await money.add_credits(world.account_id, "refund", 20 * USD)
    clock.set(bought_at + REFUND_WINDOW)  # 30 days to the second: out of the window
    with pytest.raises(RefundNotAllowed) as caught:
        await money.add_credits(world.account_id, "refund", 1)
    assert caught.value.refundable == 0
    assert await world.balance() == 34 * USD


@pytest.mark.parametrize(
    ("threshold_usd", "below", "at", "markup_basis_points"),
    [
        (50, "starter", "growth", 3000),
        (200, "growth", "scale", 2200),
        (1_000, "scale", "enterprise", 1500),
        (5_000, "enterprise", "strategic", 1000),
    ],
)
def test_each_tier_starts_exactly_at_its_threshold(
    threshold_usd: int, below: str, at: str, markup_basis_points: int
) -> None:
    assert tier_for(threshold_usd * USD - 1).name == below
    tier = tier_for(threshold_usd * USD)
    assert (tier.name, tier.markup_basis_points) == (at, markup_basis_points)


async def test_admission_marks_up_at_the_tier_and_falls_back_when_spend_leaves_the_window(
    world: World,
) -> None:
    await world.money.add_credits(world.account_id, "grant", 1 * USD)
    now = datetime.now(UTC)
    for spend_usd, markup in ((5_000, 1000), (1_000, 1500), (200, 2200), (50, 3000)):
        await world.money.apply_tiers({world.account_id: spend_usd * USD}, now)
        admission = await world.money.admit(world.account_id, world.key_id, 10_000)
        assert admission.markup_basis_points == markup
        assert admission.amount_nano_usd == 10_000 + 10_000 * markup // 10_000
        await world.money.release(admission.reservation_id)
    # The rolling window moved past the account's spend: no spend at all, back to starter.
    tiers = await world.money.apply_tiers({}, now)
    assert tiers[world.account_id].name == "starter"
    assert (await world.money.admit(world.account_id, world.key_id, 10_000)).amount_nano_usd == (
        14_000
    )
