"""Whole write transactions on an SQLite file, each run on one thread of its own.

Through the async driver (aiosqlite) every statement of a transaction is a hop from its
thread to the event loop and back, and SQLite's one write lock is held across all of them:
whatever else the loop runs in between, and whatever else the CPU runs, lengthens the hold.
Billing's settlement of a batch (a dozen statements) held the lock 15 ms at the median and
45 ms at p90 on a shared core, and every admission on the file waited behind it. Here the
transaction runs back to back on a bare sqlite3 connection, and its commit does not wait
for the disk while it holds the lock: the connection commits with `synchronous=NORMAL` and
the WAL file is fsynced right after the lock is released, before `transaction` returns. So
what a caller has been told is committed is on disk exactly as with `synchronous=FULL`
(billing acknowledges its Kafka batch only after), and the lock is held ~1 ms less.
BEGIN IMMEDIATE is retried every 0.1-1 ms (controldb.engine.begin_polling), as the edge's
admission writer does, instead of waiting in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.pool import PoolProxiedConnection

from controldb.engine import create_sync_sqlite_engine
from controldb.group_commit import immediate

T = TypeVar("T")


class SyncSqliteWriter:
    """Runs `work(connection)` inside one write transaction (BEGIN IMMEDIATE … COMMIT) on a
    single thread, one transaction at a time, and returns once the commit is durable."""

    def __init__(self, url: str) -> None:
        # Connected as every connection to the file is (WAL, busy timeout, foreign keys).
        self._engine = create_sync_sqlite_engine(url)
        database = self._engine.url.database
        assert database is not None
        self._wal_path = database + "-wal"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aig-sqlite-writer")
        self._connection: PoolProxiedConnection | None = None  # the thread's own

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """The transaction runs to its end even if the caller stops waiting (its task is
        cancelled): it commits or rolls back as a whole either way."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._engine.raw_connection()
            connection = self._connection.driver_connection
            assert connection is not None
            connection.execute("PRAGMA synchronous=NORMAL")
        connection = self._connection.driver_connection
        assert connection is not None
        # Polled, not SQLite's busy handler: with two edges admitting at their peak the
        # handler's growing sleeps (up to 100 ms each) lost the race for the lock again and
        # again, and a batch waited up to 1.9 s to begin.
        with immediate(connection, poll=True):
            result = work(connection)
        self._sync_wal()
        return result

    def _sync_wal(self) -> None:
        """Makes the commit durable. Opened by name each time: SQLite may delete and remake
        the WAL file (it deletes it when the last connection closes), so a kept descriptor
        could name a file no longer in use; while this connection is open the file exists.
        A checkpoint that copied the commit into the database file fsynced that file first
        (synchronous=NORMAL still syncs checkpoints), so syncing the WAL is enough."""
        fd = os.open(self._wal_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        """Waits for the transaction in hand, then closes the connection."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()
