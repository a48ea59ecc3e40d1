"""On SQLite, reads do not queue for the write lock that every other transaction takes first.

Another process holding the write lock (billing settling, jobs moving a task) must not turn a
recordInfo poll into a 503 once the busy timeout runs out.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker

from controldb import create_engine_from_url, migrate
from controldb import engine as engine_module
from controldb.engine import reader_of
from controldb.tasks import TaskStore


async def test_a_read_goes_on_while_another_process_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aig.db'}"
    await migrate(url)
    # A short busy timeout, so the write that must wait gives up quickly.
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(engine_module, "LOCK_WAIT_S", 0.2)
    engine = create_engine_from_url(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    other_process = sqlite3.connect(tmp_path / "aig.db", isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        # Reads: a plain query and the task store's own lookups answer.
        async with reader_of(sessions)() as session:
            assert await session.scalar(text("SELECT count(*) FROM tasks")) == 0
        tasks = TaskStore(sessions)
        assert await tasks.get("task_absent") is None
        assert (await tasks.list_owned("acct_absent")).tasks == []
        # A transaction of the ordinary sessions waits for the lock and gives up: what reads
        # did before they had sessions of their own.
        with pytest.raises(OperationalError, match="locked"):
            async with sessions() as session:
                await session.scalar(text("SELECT count(*) FROM tasks"))
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
        await engine.dispose()
