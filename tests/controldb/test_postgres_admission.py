"""Admission on PostgreSQL's own path (controldb.postgres_admission). It runs on an asyncpg
pool of its own, so what the session path had from SQLAlchemy it must do itself: survive a
connection the server dropped (the engine's pool pre-pings), and fail with SQLAlchemy's
error types (the edge maps OperationalError to 503). Its decisions are test_money's, which
runs every admission test on this backend too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from keyed_accounts import keyed_account
from pg import asyncpg_dsn, create_database
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from controldb import create_engine_from_url
from controldb.models import Account, Reservation
from controldb.money import LimitExceeded, Money
from devstack.processes import free_port


@dataclass
class Postgres:
    url: str
    engine: AsyncEngine
    money: Money
    account_id: str
    key_id: str

    async def reservations(self) -> int:
        async with self.engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(Reservation)) or 0)

    async def held(self) -> int:
        async with self.engine.connect() as connection:
            held = await connection.scalar(
                select(Account.held_nano_usd).where(Account.id == self.account_id)
            )
            return int(held or 0)


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[Postgres]:
    url = await create_database(postgres_url)
    world = await keyed_account(url)
    money = Money(world.sessions)
    await money.add_credits(world.account_id, "grant", 10_000)
    yield Postgres(url, world.engine, money, world.account_id, world.key_id)
    await money.aclose()
    await world.engine.dispose()


def _drop_every_other_connection(url: str) -> None:
    """What a server restart or a proxy's idle timeout does to the pool's connections.

    It blocks the test's event loop until the backends have exited, on purpose: the pool's
    connection must not notice (its protocol reading the server's goodbye) before the next
    admission uses it, as a connection idle in a real pool would not."""

    async def drop() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            others = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            pids = [row["pid"] for row in others]
            assert pids, "no connection to drop: the test would prove nothing"
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids
            )
            for _ in range(200):
                # pg_stat_activity is read once per transaction unless its snapshot is dropped.
                await connection.execute("SELECT pg_stat_clear_snapshot()")
                alive = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
                )
                if not alive:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the server kept the terminated connections")
        finally:
            await connection.close()

    failures: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_into(drop(), failures))
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


def _run_into(work: Coroutine[Any, Any, None], failures: list[BaseException]) -> None:
    try:
        asyncio.run(work)
    except BaseException as failure:
        failures.append(failure)


async def test_an_admission_outlives_the_connections_the_server_dropped(
    postgres: Postgres,
) -> None:
    # Admissions at once, so the pool holds several connections, as a busy edge's does.
    money, account_id, key_id = postgres.money, postgres.account_id, postgres.key_id
    first = await asyncio.gather(*(money.admit(account_id, key_id, 1_000) for _ in range(4)))
    _drop_every_other_connection(postgres.url)
    # Its first statement fails on a dead connection, before anything is committed: the
    # pool's connections are replaced, and it is made again on a new one, once only.
    second = await money.admit(account_id, key_id, 1_000)
    assert second.reservation_id not in {admission.reservation_id for admission in first}
    assert await postgres.reservations() == 5
    assert await postgres.held() == sum(a.amount_nano_usd for a in [*first, second])
    _drop_every_other_connection(postgres.url)
    await money.release(first[0].reservation_id)  # a release is retried the same way
    assert await postgres.reservations() == 4
    assert await postgres.held() == sum(a.amount_nano_usd for a in [*first[1:], second])


async def test_a_refused_admission_leaves_its_connection_usable(postgres: Postgres) -> None:
    # More refusals than the pool has connections: each must roll its transaction back, or
    # the next admission on that connection would run inside it.
    for _ in range(6):
        with pytest.raises(LimitExceeded):
            await postgres.money.admit(postgres.account_id, postgres.key_id, 20_000)
    admitted = await postgres.money.admit(postgres.account_id, postgres.key_id, 1_000)
    assert await postgres.reservations() == 1
    assert await postgres.held() == admitted.amount_nano_usd


async def test_an_unreachable_server_is_sqlalchemys_operational_error() -> None:
    # Nothing listens there: the edge answers such an error with 503 and a retry-after.
    engine = create_engine_from_url(f"postgresql+asyncpg://aig:aig@127.0.0.1:{free_port()}/aig")
    money = Money(async_sessionmaker(engine, expire_on_commit=False))
    try:
        with pytest.raises(OperationalError):
            await money.admit("acct_none", "key_none", 1_000)
        with pytest.raises(OperationalError):
            await money.release("resv_none")
    finally:
        await money.aclose()
        await engine.dispose()
