"""Reservations admitted ahead of a busy key's calls (edge/reservation_pool.py), against the
real admission on SQLite and PostgreSQL: a call takes one without touching the database,
and the caps and the balance hold exactly as when every call admits on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from keyed_accounts import keyed_account
from pg import create_database
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.errors import APIError
from aig_common.money import NANO_PER_USD
from catalog.live import LiveCatalog
from catalog.models import load_catalog
from controldb import AuthenticatedKey, KeyStore
from controldb.admission import RoomToKeep
from controldb.models import ApiKey, Reservation
from controldb.money import Admission, Money
from edge.admission import GIVE_BACK_GRACE_S, Admissions
from edge.reservation_pool import PRUNE_AT, ReservationPool

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
USE_WITHIN_S = 0.3
REFILL_DELAY_DURING_TESTS_S = 0.1


class CountingMoney(Money):
    """The real Money, counting the admitting transactions it runs (a call's own, or a
    refill's of one or more reservations)."""

    admits = 0

    async def admit_many(
        self,
        account_id: str,
        key_id: str,
        upstream_worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None = None,
    ) -> list[Admission]:
        self.admits += 1
        return await super().admit_many(
            account_id, key_id, upstream_worst_case_nano_usd, count, ahead
        )


@dataclass
class Gateway:
    money: CountingMoney
    pool: ReservationPool
    admissions: Admissions
    key: AuthenticatedKey
    sessions: async_sessionmaker[AsyncSession]
    store: KeyStore

    async def call(self, body: dict[str, Any] = BODY) -> Admission:
        return (await self.admissions.chat(self.key, body)).admission

    async def live_reservations(self) -> list[int]:
        async with self.sessions() as session:
            rows = await session.scalars(select(Reservation.amount_nano_usd))
            return list(rows)

    async def live_reservation_ids(self) -> list[str]:
        async with self.sessions() as session:
            return list(await session.scalars(select(Reservation.id)))

    async def refilled(self, pool: ReservationPool | None = None) -> None:
        """Returns once the refill set off by the last call has run."""
        await (pool or self.pool).refills_settled()

    async def set_key(self, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            key = update(ApiKey).where(ApiKey.id == self.key.key_id)
            await session.execute(key.values(**values))


def edge(money: Money, **pool_options: Any) -> tuple[ReservationPool, Admissions]:
    """One edge process's admission on `money`'s control DB: its own pool (ReservationPool's
    `pool_options`), its own shelves."""
    pool = ReservationPool(money, **pool_options)
    return pool, Admissions(LiveCatalog.fixed(load_catalog()), money, pool=pool)


@pytest.fixture(params=["sqlite", "postgres"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    else:
        url = await create_database(request.getfixturevalue("postgres_url"))
    world = await keyed_account(url, "pool")
    money = CountingMoney(world.sessions)
    await money.add_credits(world.account_id, "grant", 100 * NANO_PER_USD)
    # Calls here come a few ms apart: a shelf sized by that pace would hold many. These
    # tests count the transactions of a shelf sized by its empty finds alone; the paced
    # shelf has its own test below.
    # A refill waits REFILL_DELAY_DURING_TESTS_S, not 2-6 ms: several tests make a call
    # or change a key while a refill waits, which on a loaded machine (PostgreSQL, CI)
    # can take longer than a few milliseconds.
    # Every shelved reservation waits USE_WITHIN_S for its call, whatever the key's pace;
    # the window paced by the key has its own tests below.
    pool, admissions = edge(
        money,
        use_within_s=USE_WITHIN_S,
        horizon_s=0.0,
        refill_delay_s=(REFILL_DELAY_DURING_TESTS_S, REFILL_DELAY_DURING_TESTS_S),
        claim_within_min_s=USE_WITHIN_S,
    )
    authenticated = AuthenticatedKey(
        key_id=world.key_id, key_name="k", account_id=world.account_id, account_name="pool"
    )
    yield Gateway(money, pool, admissions, authenticated, world.sessions, world.store)
    await pool.aclose()
    await money.aclose()
    await world.engine.dispose()


async def test_a_busy_keys_next_call_takes_a_reservation_admitted_ahead(gateway: Gateway) -> None:
    first = await gateway.call()
    second = await gateway.call()  # two calls within USE_WITHIN_S: a busy key
    await gateway.refilled()
    assert gateway.money.admits == 3  # the two calls' own, and one ahead
    shelved = await gateway.live_reservations()
    assert shelved == [first.amount_nano_usd] * 3

    third = await gateway.call()

    assert gateway.money.admits == 3  # the third call ran no admission of its own
    assert third.reservation_id not in (first.reservation_id, second.reservation_id)
    assert third.amount_nano_usd == first.amount_nano_usd
    await gateway.refilled()
    assert gateway.money.admits == 4  # and the shelf was filled again behind it
    assert len(await gateway.live_reservations()) == 4


async def test_calls_admitted_while_a_refill_waits_join_it(gateway: Gateway) -> None:
    await gateway.call()
    await gateway.call()  # a busy key: a refill of one, waiting out its delay
    # The shelf is still empty and being refilled: this call admits on its own, the shelf
    # grows to two, and the one more it wants joins the refill still waiting.
    await gateway.call()
    await gateway.refilled()

    assert gateway.money.admits == 4  # three calls' own, and one refill transaction
    assert len(await gateway.live_reservations()) == 5  # three calls, two ahead
    await gateway.call()
    await gateway.call()
    assert gateway.money.admits == 4  # both taken from the shelf


@pytest.mark.parametrize(
    ("pace_s", "transactions", "ahead"),
    [
        # 40 ms of calls is eight: refilled at four, four to a transaction.
        (0.005, 2 + 1 + 3, 8),
        # Slower than one call in 40 ms: one ahead, one transaction per call, as unpaced.
        (0.1, 2 + 1 + 12, 1),
    ],
)
async def test_a_shelf_holds_the_calls_of_its_horizon_and_refills_at_half(
    gateway: Gateway, pace_s: float, transactions: int, ahead: int
) -> None:
    now = [0.0]
    pool, admissions = edge(
        gateway.money, use_within_s=USE_WITHIN_S, horizon_s=0.04, clock=lambda: now[0]
    )
    try:
        for _ in range(14):
            await admissions.chat(gateway.key, BODY)
            await gateway.refilled(pool)
            now[0] += pace_s
        # The first two calls admitted on their own; each refill is one transaction.
        assert gateway.money.admits == transactions
        assert len(await gateway.live_reservations()) == 14 + ahead
    finally:
        await pool.aclose()
    assert len(await gateway.live_reservations()) == 14


async def test_a_key_that_went_quiet_starts_its_pace_afresh(gateway: Gateway) -> None:
    now = [0.0]
    pool, admissions = edge(
        gateway.money, use_within_s=USE_WITHIN_S, horizon_s=0.04, clock=lambda: now[0]
    )
    try:
        # Fast (eight ahead), then quiet for longer than USE_WITHIN_S (those go stale and
        # are given back), then one call in 100 ms.
        for pace_s in (0.005, 0.005, 1.0, 0.1):
            now[0] += pace_s
            await admissions.chat(gateway.key, BODY)
            await gateway.refilled(pool)
        # One ahead, as for any key at that pace: the fast pace before the pause is not
        # carried over (smoothed with it, the shelf would aim at two).
        assert len(await gateway.live_reservations()) == 4 + 1
    finally:
        await pool.aclose()


async def test_a_reservation_nobody_takes_is_given_back(gateway: Gateway) -> None:
    await gateway.call()
    await gateway.call()
    await gateway.refilled()
    assert len(await gateway.live_reservations()) == 3

    await asyncio.sleep(USE_WITHIN_S + 0.2)

    assert len(await gateway.live_reservations()) == 2  # only the two calls still hold


async def test_the_cap_admits_exactly_as_many_calls_as_without_the_pool(gateway: Gateway) -> None:
    worst = (await gateway.call()).amount_nano_usd
    # Room for exactly twenty calls in all: the first, and nineteen more.
    await gateway.set_key(daily_cap_nano_usd=20 * worst)
    outcomes = []
    for _ in range(30):
        try:
            await gateway.call()
            outcomes.append("admitted")
        except APIError as refusal:
            assert refusal.status == 402
            outcomes.append("refused")
        await gateway.refilled()
    assert outcomes == ["admitted"] * 19 + ["refused"] * 11
    # The refusals emptied the shelf: what is held is exactly the twenty calls.
    assert await gateway.live_reservations() == [worst] * 20


async def test_concurrent_calls_never_pass_the_cap(gateway: Gateway) -> None:
    worst = (await gateway.call()).amount_nano_usd
    await gateway.call()
    await gateway.refilled()  # one held ahead
    await gateway.set_key(daily_cap_nano_usd=12 * worst)

    async def attempt() -> int:
        try:
            return (await gateway.call()).amount_nano_usd
        except APIError:
            return 0

    held = await asyncio.gather(*(attempt() for _ in range(40)))
    await gateway.refilled()
    await gateway.pool.aclose()
    # Never past the cap's twelve (the first two calls hold two of them), and nothing is
    # left held but the calls themselves.
    assert 0 < sum(held) <= 10 * worst
    assert sum(await gateway.live_reservations()) == 2 * worst + sum(held)


async def test_no_reservation_is_held_ahead_without_room_to_spare(gateway: Gateway) -> None:
    worst = (await gateway.call()).amount_nano_usd
    # Room for four more calls: less than HEADROOM_FACTOR times one held ahead.
    await gateway.set_key(daily_cap_nano_usd=5 * worst)
    for _ in range(3):
        await gateway.call()
        await gateway.refilled()
    assert len(await gateway.live_reservations()) == 4


async def test_a_refill_left_without_room_to_spare_admits_nothing(gateway: Gateway) -> None:
    worst = (await gateway.call()).amount_nano_usd
    await gateway.call()  # a busy key: a refill waits out its delay
    given_back = REGISTRY.get_sample_value(
        "aig_edge_reserved_ahead_total", {"outcome": "given_back"}
    )
    # Meanwhile the cap leaves room for three more calls: less than HEADROOM_FACTOR times one.
    await gateway.set_key(daily_cap_nano_usd=5 * worst)
    await gateway.refilled()

    assert gateway.money.admits == 3  # the refill's transaction ran
    # and admitted nothing: no reservation was held for a moment and given back, which
    # another edge's call could have been refused for.
    assert len(await gateway.live_reservations()) == 2
    assert (
        REGISTRY.get_sample_value("aig_edge_reserved_ahead_total", {"outcome": "given_back"})
        == given_back
    )


async def test_a_refill_refused_by_a_cap_is_not_logged_as_a_failure(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    await gateway.call()
    await gateway.call()  # a busy key: a refill waits out its delay
    await gateway.set_key(daily_cap_nano_usd=1)  # meanwhile the cap is spent
    with caplog.at_level(logging.WARNING, logger="aig.edge.admission"):
        await gateway.refilled()

    assert gateway.money.admits == 3  # the refill's transaction ran and was refused
    assert len(await gateway.live_reservations()) == 2
    assert caplog.records == []  # a refusal is the calls' news, not the database failing


async def test_a_key_with_an_rpm_limit_admits_every_call_itself(gateway: Gateway) -> None:
    await gateway.set_key(rpm_limit=100)
    for _ in range(4):
        await gateway.call()
        await gateway.refilled()
    assert gateway.money.admits == 4
    assert len(await gateway.live_reservations()) == 4


async def test_a_call_of_another_size_admits_on_its_own(gateway: Gateway) -> None:
    await gateway.call()
    await gateway.call()
    await gateway.refilled()
    smaller = {**BODY, "max_tokens": 16}

    admission = await gateway.call(smaller)

    assert gateway.money.admits == 4  # its own admission: the shelf's is for another size
    assert admission.amount_nano_usd < (await gateway.live_reservations())[0]


async def test_closing_gives_back_what_is_held_ahead(gateway: Gateway) -> None:
    await gateway.call()
    await gateway.call()
    await gateway.refilled()
    assert len(await gateway.live_reservations()) == 3

    await gateway.pool.aclose()

    assert len(await gateway.live_reservations()) == 2


async def test_a_refusal_first_gives_back_what_this_process_holds_ahead(gateway: Gateway) -> None:
    first = await gateway.call()
    second = await gateway.call()
    await gateway.refilled()  # one held ahead: three held in all
    calls = {first.reservation_id, second.reservation_id}
    (ahead,) = set(await gateway.live_reservation_ids()) - calls
    # Room for one more call beside the two only if the one ahead is given back.
    await gateway.set_key(daily_cap_nano_usd=3 * first.amount_nano_usd)

    admission = await gateway.call({**BODY, "max_tokens": 16})  # another size

    live = await gateway.live_reservation_ids()
    assert ahead not in live
    assert calls | {admission.reservation_id} <= set(live)


async def test_a_refusal_calls_off_the_refills_still_waiting_to_start(gateway: Gateway) -> None:
    await gateway.call()
    await gateway.call()  # sets off a refill, which waits REFILL_DELAY_S before it admits

    # What a refusal does before its retry: a refill admitting now would race the retry.
    assert not await gateway.pool.give_back_account(gateway.key.account_id)
    await gateway.refilled()

    assert gateway.money.admits == 2  # the two calls' own, nothing ahead
    assert len(await gateway.live_reservations()) == 2
    await gateway.call()  # the shelf is empty: this call admits on its own
    await gateway.refilled()
    assert gateway.money.admits == 4  # and the shelf refills behind it, as before
    assert len(await gateway.live_reservations()) == 4


def asked_again() -> dict[str, float]:
    """aig_edge_asked_again_total by outcome, and the count and sum of
    aig_edge_asked_again_wait_seconds, in this process."""
    counts = {
        outcome: REGISTRY.get_sample_value("aig_edge_asked_again_total", {"outcome": outcome})
        or 0.0
        for outcome in ("admitted", "refused")
    }
    for part in ("count", "sum"):
        name = f"aig_edge_asked_again_wait_seconds_{part}"
        counts[f"waits_{part}"] = REGISTRY.get_sample_value(name) or 0.0
    return counts


async def test_a_call_refused_for_another_edges_shelf_is_admitted_once_it_is_back(
    gateway: Gateway,
) -> None:
    first = await gateway.call()
    second = await gateway.call()
    await gateway.refilled()  # this edge holds one ahead, a call of this key never comes
    calls = {first.reservation_id, second.reservation_id}
    (ahead,) = set(await gateway.live_reservation_ids()) - calls
    # Room for one more call beside the two only once the one ahead is given back.
    await gateway.set_key(daily_cap_nano_usd=3 * first.amount_nano_usd)
    pool, admissions = edge(gateway.money, use_within_s=USE_WITHIN_S)  # a second edge
    before = asked_again()
    try:
        # Refused at first: the other edge waits out the shelf's shelved_until, then asks
        # again, where it used to answer 402 while the room sat on this edge's shelf.
        admission = (await admissions.chat(gateway.key, BODY)).admission
    finally:
        await pool.aclose()

    after = asked_again()
    assert (after["admitted"] - before["admitted"], after["refused"] - before["refused"]) == (1, 0)
    # One wait, at least the grace after the shelf's time: what operators see it cost.
    assert after["waits_count"] - before["waits_count"] == 1
    assert after["waits_sum"] - before["waits_sum"] >= GIVE_BACK_GRACE_S
    live = await gateway.live_reservation_ids()
    assert ahead not in live
    assert set(live) == calls | {admission.reservation_id}


async def test_a_call_refused_for_a_reservation_taken_off_another_edges_shelf_stays_refused(
    gateway: Gateway,
) -> None:
    first = await gateway.call()
    await gateway.call()
    await gateway.refilled()  # one ahead on this edge's shelf
    await gateway.set_key(daily_cap_nano_usd=3 * first.amount_nano_usd)
    third = await gateway.call()  # takes it: the cap's three are all calls now
    assert gateway.money.admits == 3
    await gateway.pool.give_back_account(gateway.key.account_id)  # no refill after it
    pool, admissions = edge(gateway.money, use_within_s=USE_WITHIN_S)  # a second edge
    before = asked_again()
    try:
        # The row still says it was shelved: the other edge waits, asks again, and is
        # refused, as the cap says.
        with pytest.raises(APIError) as refused:
            await admissions.chat(gateway.key, {**BODY, "max_tokens": 16})
    finally:
        await pool.aclose()

    assert refused.value.status == 402
    after = asked_again()
    assert (after["admitted"] - before["admitted"], after["refused"] - before["refused"]) == (0, 1)
    assert after["waits_count"] - before["waits_count"] == 1
    assert third.reservation_id in await gateway.live_reservation_ids()
    assert len(await gateway.live_reservations()) == 3


async def shelved_for(gateway: Gateway) -> list[timedelta]:
    """How long each reservation held ahead may wait for its call, as its row says."""
    async with gateway.sessions() as session:
        rows = await session.execute(
            select(Reservation.created_at, Reservation.shelved_until).where(
                Reservation.shelved_until.is_not(None)
            )
        )
        return [until - created for created, until in rows if until is not None]


@pytest.mark.parametrize(
    ("pace_s", "window_s"),
    [
        (0.0001, 0.05),  # a burst: 32 gaps are 3.2 ms, CLAIM_WITHIN_MIN_S is the floor
        (0.005, 0.16),  # 32 gaps of 5 ms
        (1.5, 2.0),  # 48 s, but never past USE_WITHIN_S
    ],
)
async def test_a_shelved_reservation_waits_for_its_call_32_of_its_keys_gaps(
    gateway: Gateway, pace_s: float, window_s: float
) -> None:
    now = [0.0]
    pool, admissions = edge(gateway.money, use_within_s=2.0, clock=lambda: now[0])
    try:
        for _ in range(2):  # the second call makes a busy key, and sets off a refill
            await admissions.chat(gateway.key, BODY)
            now[0] += pace_s
        await gateway.refilled(pool)
        windows = await shelved_for(gateway)
        held = await gateway.live_reservations()
    finally:
        await pool.aclose()
    assert windows and set(windows) == {timedelta(seconds=window_s)}
    assert len(windows) == len(held) - 2  # the calls' own rows were never shelved


async def test_a_reservation_due_sooner_than_one_before_it_is_given_back_first(
    gateway: Gateway,
) -> None:
    now = [0.0]
    pool, admissions = edge(
        gateway.money, use_within_s=2.0, refill_delay_s=(0.0, 0.0), clock=lambda: now[0]
    )
    try:
        await admissions.chat(gateway.key, BODY)
        now[0] += 1.5
        call = (await admissions.chat(gateway.key, BODY)).admission
        await gateway.refilled(pool)  # a slow key: one ahead, for 2 s
        assert await shelved_for(gateway) == [timedelta(seconds=2.0)]
        # The key quickens (as the pool hears of its calls): the next refill's
        # reservations are due in 32 of its new, smoothed gaps, long before the first.
        worst = pool._shelves[gateway.key.key_id].worst_case_nano_usd
        for _ in range(40):
            now[0] += 0.0001
            pool.admitted(gateway.key, worst, call)
        await gateway.refilled(pool)
        windows = await shelved_for(gateway)
        sooner = max(window for window in windows if window < timedelta(seconds=2.0))
        now[0] += sooner.total_seconds() + 0.001
        await asyncio.sleep(sooner.total_seconds() + 0.2)  # the shelf's timer, in real time

        assert await shelved_for(gateway) == [timedelta(seconds=2.0)]
    finally:
        await pool.aclose()


async def test_the_shelf_gives_back_by_the_time_its_rows_say(gateway: Gateway) -> None:
    pool, admissions = edge(gateway.money, use_within_s=2.0, refill_delay_s=(0.0, 0.0))
    try:
        await admissions.chat(gateway.key, BODY)
        await admissions.chat(gateway.key, BODY)  # a busy key, calls a few ms apart
        await gateway.refilled(pool)
        until = await gateway.money.shelved_until(gateway.key.account_id)
        assert until is not None
        assert until - datetime.now(UTC) < timedelta(seconds=1)  # paced, not 2 s
        await asyncio.sleep((until - datetime.now(UTC)).total_seconds() + 0.05)
        # Given back by then: what another edge refused for that room waits for.
        assert len(await gateway.live_reservations()) == 2
        assert await gateway.money.shelved_until(gateway.key.account_id) is None
    finally:
        await pool.aclose()


def held_ahead() -> tuple[float | None, float | None]:
    return (
        REGISTRY.get_sample_value("aig_edge_reservations_held_ahead"),
        REGISTRY.get_sample_value("aig_edge_reservations_held_ahead_nano_usd"),
    )


async def test_the_gauges_show_what_the_shelves_hold(gateway: Gateway) -> None:
    count, amount = held_ahead()
    assert count is not None and amount is not None
    first = await gateway.call()
    await gateway.call()
    await gateway.refilled()
    assert held_ahead() == (count + 1, amount + first.amount_nano_usd)

    await gateway.call()  # takes it; its own refill is still waiting out its delay
    assert held_ahead() == (count, amount)
    await gateway.refilled()
    assert held_ahead() == (count + 1, amount + first.amount_nano_usd)

    await gateway.pool.aclose()
    assert held_ahead() == (count, amount)


async def test_quiet_keys_are_forgotten() -> None:
    now = [0.0]
    pool = ReservationPool(None, clock=lambda: now[0])  # type: ignore[arg-type]
    admission = Admission("resv_1", 1000, 0, datetime.now(UTC), headroom_nano_usd=10**12)
    for index in range(3 * PRUNE_AT):
        key = AuthenticatedKey(
            key_id=f"key_{index}", key_name="k", account_id="acct", account_name="a"
        )
        pool.admitted(key, 1000, admission)  # one call each: a shelf, never filled
        now[0] += 1.0  # each key quiet by the time the next few have called
    assert pool.keys <= PRUNE_AT  # of the 3 x PRUNE_AT keys seen
