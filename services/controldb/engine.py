"""Async engines for the control database, tuned per backend."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_only

SQLITE_BUSY_TIMEOUT_MS = 5_000
# How every writer on an SQLite file waits for its one write lock: BEGIN IMMEDIATE retried,
# first after LOCK_POLL_FIRST_S, each next try twice as late, never more than
# LOCK_POLL_MAX_S apart, given up after the busy timeout. SQLite's own busy handler sleeps
# 1, 2, 5, 10 … up to 100 ms between tries: a writer waiting in it loses the lock at every
# release to one that polls, and starves behind a steady stream of them.
LOCK_POLL_FIRST_S = 0.0001
LOCK_POLL_MAX_S = 0.001
LOCK_WAIT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
# An execution option: transactions of connections that carry it only read (see reader_of).
READS_ONLY = "aig_reads_only"
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
# Recycle before typical load-balancer / PgBouncer idle timeouts cut connections.
POSTGRES_POOL_RECYCLE_S = 1_800


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def is_sqlite_file(url: str) -> bool:
    return is_sqlite(url) and not _is_sqlite_memory(url)


def _is_sqlite_memory(url: str) -> bool:
    database = make_url(url).database
    return database in (None, "", ":memory:")


def create_engine_from_url(url: str) -> AsyncEngine:
    """An engine for `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`.

    SQLite runs in WAL mode (readers never block the writer) with a busy timeout, foreign
    keys on, and every transaction opened with `BEGIN IMMEDIATE`: the write lock is taken
    up front, so two concurrent read-then-write transactions wait for it one after the other
    instead of one failing with "database is locked" halfway through. That serialises
    writers, which is the price of correct counters (caps, balances) on a single file.
    A process's writers take turns for the lock in the order they asked (`WriteTurns`), and
    the one whose turn it is polls for it as the services' blocking writers do, for up to
    the busy timeout.
    """
    if is_sqlite(url):
        return _create_sqlite_engine(url)
    if is_postgres(url):
        return create_async_engine(
            url,
            pool_size=POSTGRES_POOL_SIZE,
            max_overflow=POSTGRES_MAX_OVERFLOW,
            pool_pre_ping=True,
            pool_recycle=POSTGRES_POOL_RECYCLE_S,
        )
    raise ValueError(f"unsupported control database backend: {make_url(url).drivername}")


def _create_sqlite_engine(url: str) -> AsyncEngine:
    in_memory = _is_sqlite_memory(url)
    options: dict[str, Any] = {}
    if in_memory:
        # Every connection to ":memory:" is a new, empty database; share one.
        options["poolclass"] = StaticPool
    engine = create_async_engine(url, **options)
    _configure_sqlite(engine.sync_engine, wal=not in_memory, turns=WriteTurns())
    return engine


def create_sync_sqlite_engine(url: str) -> Engine:
    """A blocking engine on the same SQLite file, configured exactly as the async one, for
    work that runs on a thread of its own (admission's group commit)."""
    if not is_sqlite_file(url):
        raise ValueError("a blocking engine is only made for an SQLite file")
    engine = create_engine(make_url(url).set(drivername="sqlite+pysqlite"))
    _configure_sqlite(engine, wal=True)
    return engine


class LoopLock:
    """One asyncio.Lock per event loop, since an asyncio.Lock belongs to a single loop: an
    engine or a module used from several loops (tests, migrations under asyncio.run) never
    shares one across them. Forgotten with its loop."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Lock:
        """The running loop's lock."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class WriteTurns:
    """The writers of one async engine, in line for SQLite's write lock: one at a time, in
    the order they came, polls for it (`begin_polling`); the rest wait on an asyncio lock,
    which is first come, first served. So at most one poller per process (per event loop)
    and no writer of the process overtaken by a later one. Held only until BEGIN IMMEDIATE
    succeeds or gives up, never across the transaction: nothing is left to release when a
    transaction ends, however it ends."""

    def __init__(self) -> None:
        self._line = LoopLock()

    def lock(self) -> asyncio.Lock:
        """The line of the running loop's writers."""
        return self._line()

    async def begin_immediate(self, driver: Any) -> None:
        """`driver` (an aiosqlite connection) in a write transaction, in this writer's turn;
        sqlite3's OperationalError if the lock stayed taken for LOCK_WAIT_S. The polling runs
        on the connection's own aiosqlite thread (`_execute`, which SQLAlchemy's adapter
        also reaches behind): one hop from the loop, as a plain BEGIN IMMEDIATE was. A writer
        cancelled meanwhile gives up its turn at once; the poll ends on its thread, and the
        pool's rollback when the connection is checked in undoes a BEGIN it then made."""
        async with self.lock():
            await driver._execute(begin_polling, driver._conn)


def begin_polling(connection: DBAPIConnection) -> None:
    """BEGIN IMMEDIATE, retried until the write lock is free: the wait is the lock's release
    plus at most LOCK_POLL_MAX_S. Only the BEGIN runs without a busy timeout; the
    transaction's own statements keep SQLite's, as on every other connection."""
    deadline = time.monotonic() + LOCK_WAIT_S
    pause = LOCK_POLL_FIRST_S
    connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LOCK_POLL_MAX_S)
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _configure_sqlite(engine: Engine, *, wal: bool, turns: WriteTurns | None = None) -> None:
    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, which would otherwise
        # open transactions lazily and run DDL outside them; SQLAlchemy emits BEGIN below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        if connection.get_execution_options().get(READS_ONLY):
            # A WAL reader sees the last commit without the write lock: it must not queue
            # behind writers (nor make them wait) for it.
            connection.exec_driver_sql("BEGIN")
        elif turns is None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # a blocking engine's own thread
        else:
            _begin_in_turn(connection, turns)


def _begin_in_turn(connection: Connection, turns: WriteTurns) -> None:
    """Runs inside the async engine's greenlet, so the wait in line is on the event loop. A
    lock that stays taken is SQLAlchemy's OperationalError, as SQLite's busy timeout was."""
    driver = connection.connection.driver_connection
    try:
        await_only(turns.begin_immediate(driver))
    except sqlite3.Error as error:
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            raise OperationalError("BEGIN IMMEDIATE", None, error) from error
        # Any other failure is SQLAlchemy's to wrap, and to invalidate the connection with
        # if the database is gone: the BEGIN once more, through it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def reader_of(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """Sessions on the same engine for transactions that only read.

    On SQLite every other transaction begins IMMEDIATE, i.e. takes the one write lock
    first, so reads would queue with the writes of every service on the file: under load
    (recordInfo polls, the jobs runner following its tasks) a read then waited past the
    busy timeout and the caller got a 503. These begin DEFERRED and, in WAL mode, never
    wait. On PostgreSQL the option changes nothing. Never write through them: a deferred
    transaction that writes can fail halfway with "database is locked"."""
    options = dict(sessions.kw)
    bind = options.pop("bind")
    return async_sessionmaker(bind.execution_options(**{READS_ONLY: True}), **options)
