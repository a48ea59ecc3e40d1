"""A key's rpm_limit, enforced inside admission's transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from controldb_fakes import UtcClock
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.money import NANO_PER_USD
from controldb import KeyStore, create_engine_from_url
from controldb.models import ApiKey, Reservation
from controldb.money import Admission, LimitExceeded, Money, RateLimited

START = datetime(2026, 3, 14, 12, 0, 5, tzinfo=UTC)


@dataclass
class Keys:
    sessions: async_sessionmaker[AsyncSession]
    clock: UtcClock
    edges: tuple[Money, Money]  # two Moneys on one database: two edge replicas
    account_id: str
    limited: str
    unlimited: str

    async def reservations(self, key_id: str) -> int:
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(Reservation).where(Reservation.key_id == key_id)
            )
            return int(count or 0)

    async def key(self, key_id: str) -> ApiKey:
        async with self.sessions() as session:
            found = await session.get(ApiKey, key_id)
            assert found is not None
            return found


@pytest.fixture
async def keys(migrated_url: str) -> AsyncIterator[Keys]:
    engine = create_engine_from_url(migrated_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"pepper")
    account = await store.create_account("rpm")
    limited, _ = await store.create_key(account.id, "limited")
    unlimited, _ = await store.create_key(account.id, "unlimited")
    async with sessions() as session, session.begin():
        await session.execute(update(ApiKey).where(ApiKey.id == limited.id).values(rpm_limit=5))
    clock = UtcClock(START)
    edges = (Money(sessions, clock=clock), Money(sessions, clock=clock))
    await edges[0].add_credits(account.id, "grant", 100 * NANO_PER_USD)
    yield Keys(sessions, clock, edges, account.id, limited.id, unlimited.id)
    for money in edges:
        await money.aclose()
    await engine.dispose()


async def test_two_edges_admit_exactly_the_limit_between_them(keys: Keys) -> None:
    """Forty concurrent calls, alternating between two replicas: five are admitted, each
    with its x-ratelimit figures; the rest are refused before anything is reserved."""

    async def call(index: int) -> Admission | BaseException:
        try:
            return await keys.edges[index % 2].admit(keys.account_id, keys.limited, 1000)
        except RateLimited as refused:
            return refused

    outcomes = await asyncio.gather(*(call(i) for i in range(40)))
    admitted = [o for o in outcomes if isinstance(o, Admission)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 5 and len(refused) == 35
    assert sorted(a.rate.remaining for a in admitted if a.rate) == [0, 1, 2, 3, 4]
    assert {(r.limit, r.retry_after_ms) for r in refused} == {(5, 55_000 + 60_000 // 5)}
    assert await keys.reservations(keys.limited) == 5
    stored = await keys.key(keys.limited)
    assert (stored.rpm_current, stored.rpm_previous) == (5, 0)


async def test_the_window_slides_into_the_next_minute(keys: Keys) -> None:
    money = keys.edges[0]
    for _ in range(5):
        await money.admit(keys.account_id, keys.limited, 1000)
    # 12:01:06: the five weigh 5 * 54/60 = 4.5, so none fits until 12:01:12 (5 * 48/60 = 4).
    keys.clock.set(START + timedelta(seconds=61))
    with pytest.raises(RateLimited) as refused:
        await money.admit(keys.account_id, keys.limited, 1000)
    assert refused.value.retry_after_ms == 6_000
    keys.clock.set(START + timedelta(seconds=67))
    admitted = await money.admit(keys.account_id, keys.limited, 1000)
    assert admitted.rate is not None and admitted.rate.remaining == 0
    stored = await keys.key(keys.limited)
    assert (stored.rpm_current, stored.rpm_previous) == (1, 5)


async def test_a_refusal_for_money_does_not_count_toward_the_rate(keys: Keys) -> None:
    money = keys.edges[0]
    async with keys.sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == keys.limited).values(daily_cap_nano_usd=1_400)
        )
    await money.admit(keys.account_id, keys.limited, 1000)  # 1,400 with the markup
    for _ in range(10):
        with pytest.raises(LimitExceeded):
            await money.admit(keys.account_id, keys.limited, 1000)
    assert (await keys.key(keys.limited)).rpm_current == 1


async def test_a_key_without_a_limit_is_neither_counted_nor_limited(keys: Keys) -> None:
    money = keys.edges[0]
    for _ in range(20):
        admission = await money.admit(keys.account_id, keys.unlimited, 1000)
        assert admission.rate is None
    stored = await keys.key(keys.unlimited)
    assert (stored.rpm_minute, stored.rpm_current) == (None, 0)


async def test_removing_the_limit_lifts_it_at_once(keys: Keys) -> None:
    money = keys.edges[1]
    for _ in range(5):
        await money.admit(keys.account_id, keys.limited, 1000)
    with pytest.raises(RateLimited):
        await money.admit(keys.account_id, keys.limited, 1000)
    async with keys.sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == keys.limited).values(rpm_limit=None)
        )
    assert (await money.admit(keys.account_id, keys.limited, 1000)).rate is None
    assert await keys.reservations(keys.limited) == 6
