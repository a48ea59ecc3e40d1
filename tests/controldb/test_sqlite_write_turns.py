"""On SQLite, a process's async writers take SQLite's one write lock in the order they asked
for it, and the one whose turn it is polls for it as the blocking writers do (controldb/
engine.py `WriteTurns`).

Before, each waited in SQLite's own busy handler, whose sleeps grow to 100 ms: at every
release a writer that polls (admission's group commit, billing's settlement) or one that had
just started took the lock first, and under a steady load a createTask that found the lock
taken waited out the 5 s busy timeout and was answered 503 (`python -m bench.jobs_throughput
500 1000 sqlite`: up to 3.7 s, then a 503, in one run of two).
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controldb import create_engine_from_url, migrate
from controldb import engine as engine_module
from controldb.engine import reader_of

WRITERS = 12


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aig.db'}"
    await migrate(url)
    made = async_sessionmaker(create_engine_from_url(url), expire_on_commit=False)
    async with made.begin() as session:
        await session.execute(text("CREATE TABLE arrivals (position INTEGER)"))
    yield made
    await made.kw["bind"].dispose()


def _lock_taken_elsewhere(tmp_path: Path) -> sqlite3.Connection:
    """Another process's connection, holding the file's write lock until it rolls back."""
    other_process = sqlite3.connect(tmp_path / "aig.db", isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")
    return other_process


async def _write(sessions: async_sessionmaker[AsyncSession], position: int) -> None:
    async with sessions.begin() as session:
        await session.execute(text("INSERT INTO arrivals VALUES (:p)"), {"p": position})


async def _committed(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with reader_of(sessions)() as session:
        return list((await session.scalars(text("SELECT position FROM arrivals"))).all())


async def test_writers_take_the_lock_in_the_order_they_asked_for_it(
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The order in which the writers reach the line (a writer that had to open a connection
    # first may come later than one started after it, on a busy machine).
    writing: contextvars.ContextVar[int] = contextvars.ContextVar("writing")
    arrived: list[int] = []
    line_of = engine_module.WriteTurns.lock

    def noting_arrival(turns: engine_module.WriteTurns) -> asyncio.Lock:
        arrived.append(writing.get())
        return line_of(turns)

    monkeypatch.setattr(engine_module.WriteTurns, "lock", noting_arrival)
    other_process = _lock_taken_elsewhere(tmp_path)

    async def write(position: int) -> None:
        writing.set(position)
        await _write(sessions, position)

    try:
        writers = []
        for position in range(WRITERS):
            writers.append(asyncio.create_task(write(position)))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert not any(writer.done() for writer in writers)
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    await asyncio.gather(*writers)
    committed = await _committed(sessions)
    assert sorted(arrived) == list(range(WRITERS))
    # In SQLite's busy handler they took it in whatever order their sleeps ended.
    assert committed == arrived


async def test_a_read_does_not_wait_in_line(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    other_process = _lock_taken_elsewhere(tmp_path)
    try:
        waiting = asyncio.create_task(_write(sessions, 1))
        await asyncio.sleep(0.05)
        async with reader_of(sessions)() as session:
            assert await session.scalar(text("SELECT count(*) FROM arrivals")) == 0
        assert not waiting.done()
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    await waiting


async def test_a_lock_that_stays_taken_is_sqlalchemys_operational_error(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "LOCK_WAIT_S", 0.1)
    other_process = _lock_taken_elsewhere(tmp_path)
    try:
        with pytest.raises(OperationalError, match="locked"):
            await _write(sessions, 1)
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    # The connection that gave up has its busy timeout back, and the next writer goes in.
    async with sessions.begin() as session:
        await session.execute(text("INSERT INTO arrivals VALUES (2)"))
        timeout = await session.scalar(text("PRAGMA busy_timeout"))
    assert timeout == engine_module.SQLITE_BUSY_TIMEOUT_MS


async def test_a_writer_cancelled_in_line_leaves_neither_its_turn_nor_the_lock_held(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    other_process = _lock_taken_elsewhere(tmp_path)
    polling = asyncio.create_task(_write(sessions, 1))  # its turn: polling on its thread
    await asyncio.sleep(0.02)
    queued = asyncio.create_task(_write(sessions, 2))  # waiting for the turn
    await asyncio.sleep(0.02)
    polling.cancel()
    queued.cancel()
    # The cancelled poll goes on until it has the lock (or gives up, after LOCK_WAIT_S), so
    # it ends once the other process lets go; then the pool rolls its BEGIN back.
    other_process.execute("ROLLBACK")
    for cancelled in (polling, queued):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    # Neither holds SQLite's lock nor the turn: the next writer and another process go in.
    await asyncio.wait_for(_write(sessions, 3), timeout=10)
    other_process.execute("BEGIN IMMEDIATE")
    other_process.execute("ROLLBACK")
    other_process.close()
    assert await _committed(sessions) == [3]


async def test_a_failure_other_than_the_lock_goes_through_sqlalchemy(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What SQLAlchemy does with a driver's error (wrap it, invalidate a connection whose
    database is gone) still happens: the BEGIN is made once more through it."""
    failures = [sqlite3.DatabaseError("disk I/O error")]
    polling = engine_module.begin_polling

    def fails_once(connection: DBAPIConnection) -> None:
        if failures:
            raise failures.pop()
        polling(connection)

    monkeypatch.setattr(engine_module, "begin_polling", fails_once)
    await _write(sessions, 1)  # the second BEGIN, SQLAlchemy's, goes in
    assert failures == []
    assert await _committed(sessions) == [1]
