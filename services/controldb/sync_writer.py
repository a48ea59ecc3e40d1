"""Whole write transactions on an SQLite file, each run on one thread of its own.

Through the async driver (aiosqlite) every statement of a transaction is a hop from its
thread to the event loop and back, and SQLite's one write lock is held across all of them:
whatever else the loop runs in between, and whatever else the CPU runs, lengthens the hold.
Billing's settlement of a batch (a dozen statements) held the lock 15 ms at the median and
45 ms at p90 on a shared core, and every admission on the file waited behind it. Here the
transaction's statements run back to back on a blocking connection, so the lock is held for
SQLite's own work and the commit's fsync only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from controldb.engine import create_sync_sqlite_engine

T = TypeVar("T")


class SyncSqliteWriter:
    """Runs `work(session)` inside one write transaction (BEGIN IMMEDIATE … COMMIT, as every
    session on the file begins) on a single thread, one transaction at a time."""

    def __init__(self, url: str) -> None:
        self._engine = create_sync_sqlite_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aig-sqlite-writer")

    async def transaction(self, work: Callable[[Session], T]) -> T:
        """The transaction runs to its end even if the caller stops waiting (its task is
        cancelled): it commits or rolls back as a whole either way."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[Session], T]) -> T:
        with self._sessions() as session, session.begin():
            return work(session)

    async def aclose(self) -> None:
        """Waits for the transaction in hand, then closes the connection."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        self._engine.dispose()
