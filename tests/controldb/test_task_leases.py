"""Task leases: which jobs replica follows a media task, so that when one goes away for good
another adopts its tasks, and two never adopt the same one (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from controldb import create_engine_from_url
from controldb.models import Task
from controldb.tasks import SUCCESS, WAITING, TaskStore, new_task_id, now_ms


def _task(state: str = WAITING, **values: Any) -> Task:
    now = int(time.time() * 1000)
    return Task(
        id=new_task_id(),
        account_id="acct_leases",
        key_id="key_leases",
        model="flux-kontext-pro",
        state=state,
        param="{}",
        units=1,
        unit_price_nano_usd=40_000_000,
        markup_basis_points=4000,
        reservation_id="res_" + new_task_id(),
        reserved_nano_usd=56_000_000,
        create_time_ms=now,
        update_time_ms=now,
        deadline_ms=now + 600_000,
        **values,
    )


@pytest.fixture
async def tasks(migrated_url: str) -> AsyncIterator[tuple[TaskStore, Any]]:
    engine = create_engine_from_url(migrated_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    yield TaskStore(sessions), sessions
    await engine.dispose()


async def _add(sessions: Any, *rows: Task) -> None:
    async with sessions() as session, session.begin():
        session.add_all(rows)


async def test_a_live_lease_is_kept_and_a_lapsed_one_adopted(tasks: tuple[TaskStore, Any]) -> None:
    store, sessions = tasks
    live, lapsed, done = _task(), _task(), _task(SUCCESS)
    soon = now_ms() + 30_000
    await _add(sessions, live, lapsed, done)
    await store.renew_leases("jobs-a", [live.id, lapsed.id, done.id], soon)
    assert await store.adopt("jobs-b", soon) == []
    # jobs-a went away: its lease on `lapsed` ran out (set in the past here).
    await store.renew_leases("jobs-a", [lapsed.id], now_ms() - 1)
    assert await store.adopt("jobs-b", soon) == [lapsed.id]
    adopted = await store.get(lapsed.id)
    assert adopted is not None and adopted.followed_by == "jobs-b"
    # A finished task is never adopted, whatever its lease.
    await store.renew_leases("jobs-a", [done.id], now_ms() - 1)
    assert await store.adopt("jobs-c", soon) == []


async def test_released_leases_are_adopted_at_once(tasks: tuple[TaskStore, Any]) -> None:
    store, sessions = tasks
    task = _task()
    await _add(sessions, task)
    await store.renew_leases("jobs-a", [task.id], now_ms() + 30_000)
    await store.release_leases("jobs-other", [task.id])  # not its lease: nothing happens
    assert await store.adopt("jobs-b", now_ms() + 30_000) == []
    await store.release_leases("jobs-a", [task.id])
    assert await store.adopt("jobs-b", now_ms() + 30_000) == [task.id]


async def test_at_start_a_replica_takes_its_own_and_never_leased_tasks(
    tasks: tuple[TaskStore, Any],
) -> None:
    store, sessions = tasks
    mine, never, theirs = _task(), _task(), _task()
    await _add(sessions, mine, never, theirs)
    soon = now_ms() + 30_000
    await store.renew_leases("jobs-a", [mine.id], soon)
    await store.renew_leases("jobs-b", [theirs.id], soon)
    # A periodic round takes neither: `mine` is leased, `never` is the Kafka consumer's.
    assert await store.adopt("jobs-a", soon) == []
    # jobs-a restarted: its own tasks and the never-leased one, not jobs-b's.
    assert await store.adopt("jobs-a", soon, at_start=True) == sorted([mine.id, never.id])


async def test_two_replicas_adopting_at_once_split_the_tasks(
    tasks: tuple[TaskStore, Any],
) -> None:
    store, sessions = tasks
    orphans = [_task(followed_by="gone", followed_until_ms=now_ms() - 1) for _ in range(20)]
    await _add(sessions, *orphans)
    soon = now_ms() + 30_000
    first, second = await asyncio.gather(store.adopt("jobs-b", soon), store.adopt("jobs-c", soon))
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(task.id for task in orphans)
