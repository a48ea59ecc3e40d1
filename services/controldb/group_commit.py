"""Admission on an SQLite file: one writer thread, many admissions per transaction.

SQLite serialises writers anyway, so admitting calls one transaction at a time through the
async driver paid, per call, a BEGIN IMMEDIATE, a commit (an fsync) and half a dozen hops
between the event loop and aiosqlite's thread. Here the event loop hands each admission to
one thread that owns a blocking connection; the thread takes whatever has queued up, runs
the admissions one after another inside a single transaction (each one reads the
reservations inserted before it, so caps hold exactly as before) and commits once.

The statements are SQLAlchemy's own (the same LIMITS_QUERY the PostgreSQL path runs),
compiled once for SQLite and executed on the bare sqlite3 connection: building and caching
them per call cost more than SQLite spent running them.

When no other writer holds SQLite's lock, an admission does not wait for the thread at all:
it runs at once on the event loop through a second connection whose busy timeout is zero,
so it either takes the lock immediately or falls back to the writer thread; it never blocks
the loop on a lock. That connection commits with `synchronous=NORMAL` (WAL mode: durable
across a process crash, not across power loss), so the loop never waits on an fsync either;
the writer thread's connection commits the same way, so no batch holds the lock through an
fsync. A reservation lost with the machine's power is harmless to money: the calls it
covered died with that machine, and settlement debits from usage events, not from
reservations.

A caller that gives up (its task is cancelled) while its admission is queued or running
must not leave money held: the reservation it was given is released by the same thread.
(An inline admission cannot be abandoned half-way: it never yields to the event loop.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import PoolProxiedConnection

from controldb.admission import (
    COUNT_REQUEST,
    LIMITS_QUERY,
    Admission,
    AdmissionsCommitted,
    Clock,
    RoomToKeep,
    decide_admissions,
    limits_parameters,
    utc_now,
)
from controldb.engine import begin_polling, create_sync_sqlite_engine
from controldb.models import Reservation, sqlite_timestamp_text

log = logging.getLogger("controldb.admission")

# Enough to amortise a commit over a burst; small enough that one batch never holds the
# write lock for long (each admission is two indexed statements).
MAX_BATCH = 128


@dataclass(slots=True)
class _Admit:
    account_id: str
    key_id: str
    worst_case_nano_usd: int
    count: int  # reservations of this worst case wanted; decide_admissions may grant fewer
    ahead: RoomToKeep | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Admission]]


@dataclass(slots=True)
class _Release:
    reservation_id: str
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None


_Work = _Admit | _Release


@contextlib.contextmanager
def immediate(connection: DBAPIConnection, *, poll: bool = False) -> Iterator[None]:
    """One write transaction: BEGIN IMMEDIATE (on a connection with a busy timeout of zero:
    at once, or raises; with `poll`, retried as `engine.begin_polling` does), COMMIT on success,
    ROLLBACK on any error."""
    if poll:
        begin_polling(connection)
    else:
        connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


class _Statements:
    """SQL text and fixed parameters, compiled once for SQLite's named parameter style."""

    def __init__(self) -> None:
        named = SQLiteDialect_pysqlite(paramstyle="named")
        limits = LIMITS_QUERY.compile(dialect=named)
        self.limits_sql = str(limits)
        self.limits_constants = {k: v for k, v in limits.params.items() if v is not None}
        self.insert_sql = str(insert(Reservation).compile(dialect=named))
        self.count_request_sql = str(COUNT_REQUEST.compile(dialect=named))
        release = delete(Reservation).where(Reservation.id == bindparam("reservation_id"))
        self.release_sql = str(release.compile(dialect=named))
        # Timestamps stored exactly as the ORM stores them, so `expires_at > :now` compares
        # like with like.
        self.timestamp = sqlite_timestamp_text(named)


class GroupCommitAdmissions:
    def __init__(
        self,
        url: str,
        reservation_ttl: timedelta,
        *,
        clock: Clock = utc_now,
        admissions_committed: AdmissionsCommitted | None = None,
    ) -> None:
        self._engine = create_sync_sqlite_engine(url)
        self._ttl = reservation_ttl
        self._clock = clock
        # Test seam (None in production): runs on the writer thread after a batch that
        # admitted something has committed, before its callers are answered.
        self._admissions_committed = admissions_committed
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._statements = _Statements()
        self._connection: PoolProxiedConnection | None = None  # the writer thread's own
        self._inline: PoolProxiedConnection | None = None  # the event loop's, never waits
        self._pending = 0  # admissions handed to the thread and not yet answered

    async def admit_many(
        self,
        account_id: str,
        key_id: str,
        worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None = None,
    ) -> list[Admission]:
        """Up to `count` reservations in one transaction (decide_admissions, which says
        when there may be none), or the first one's refusal."""
        if self._pending == 0:
            # Nothing queued: nobody to batch with, so do not pay for the thread hop.
            outcome = self._admit_inline(account_id, key_id, worst_case_nano_usd, count, ahead)
            if isinstance(outcome, list):
                return outcome
            if outcome is not None:
                raise outcome
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Admission]] = loop.create_future()
        self._pending += 1
        try:
            self._submit(
                _Admit(account_id, key_id, worst_case_nano_usd, count, ahead, loop, future)
            )
            return await future
        finally:
            self._pending -= 1

    def _admit_inline(
        self,
        account_id: str,
        key_id: str,
        worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None,
    ) -> list[Admission] | Exception | None:
        """The admissions, or the refusal, if SQLite's write lock was free; None if it was
        not (or the connection failed), and the writer thread must do it."""
        try:
            if self._inline is None:
                self._inline = self._admission_connection()
                driver = self._inline.driver_connection
                assert driver is not None
                driver.execute("PRAGMA busy_timeout=0")
            connection = self._inline.driver_connection
            assert connection is not None
            with immediate(connection):
                return self._admit(
                    connection, account_id, key_id, worst_case_nano_usd, count, ahead, self._clock()
                )
        except sqlite3.OperationalError:
            return None  # locked by another writer: queue behind it instead of waiting

    def _admission_connection(self) -> PoolProxiedConnection:
        """A connection for either admission path. Both commit with synchronous=NORMAL: no
        fsync while SQLite's write lock is held. With the default (FULL) the writer
        thread's batches once held the lock through an fsync of the WAL, and another edge's
        admissions and billing's settlements waited for it."""
        connection = self._engine.raw_connection()
        driver = connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA synchronous=NORMAL")
        return connection

    async def release(self, reservation_id: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._submit(_Release(reservation_id, loop, future))
        await future

    async def aclose(self) -> None:
        thread = self._thread
        if thread is None:
            self._close_inline()
            self._engine.dispose()
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._close_inline()
        self._engine.dispose()

    def _close_inline(self) -> None:
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    def _submit(self, work: _Work) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="aig-admission-writer", daemon=True
                    )
                    thread.start()
                    self._thread = thread
        self._queue.put(work)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < MAX_BATCH:
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    break
                if work is None:
                    stopping = True
                    break
                batch.append(work)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[_Work]) -> None:
        outcomes: list[list[Admission] | BaseException | None] = []
        sql = self._statements
        try:
            if self._connection is None:
                self._connection = self._admission_connection()
            connection = self._connection.driver_connection
            assert connection is not None
            with immediate(connection, poll=True):
                now = self._clock()
                for work in batch:
                    if isinstance(work, _Release):
                        connection.execute(sql.release_sql, {"reservation_id": work.reservation_id})
                        outcomes.append(None)
                        continue
                    outcomes.append(
                        self._admit(
                            connection,
                            work.account_id,
                            work.key_id,
                            work.worst_case_nano_usd,
                            work.count,
                            work.ahead,
                            now,
                        )
                    )
        except Exception as exc:  # the commit (or the database) failed: nothing was admitted
            log.warning("admission batch of %d failed: %s", len(batch), type(exc).__name__)
            outcomes = [exc] * len(batch)
            # A broken connection is not reused; the next batch opens a fresh one.
            with contextlib.suppress(Exception):
                if self._connection is not None:
                    self._connection.close()
            self._connection = None
        admitted = sum(len(outcome) for outcome in outcomes if isinstance(outcome, list))
        if admitted and self._admissions_committed is not None:
            self._admissions_committed(admitted)
        for work, outcome in zip(batch, outcomes, strict=True):
            if work.loop is not None:
                work.loop.call_soon_threadsafe(self._deliver, work, outcome)

    def _admit(
        self,
        connection: DBAPIConnection,
        account_id: str,
        key_id: str,
        worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None,
        now: datetime,
    ) -> list[Admission] | Exception:
        sql = self._statements
        parameters = limits_parameters(account_id, key_id, now)
        parameters["now"] = sql.timestamp(now)
        cursor = connection.execute(sql.limits_sql, {**sql.limits_constants, **parameters})
        found = cursor.fetchone()
        columns = (
            None
            if found is None
            else dict(zip((d[0] for d in cursor.description), found, strict=True))
        )
        try:
            decisions = decide_admissions(
                columns, account_id, key_id, worst_case_nano_usd, now, self._ttl, count, ahead
            )
        except Exception as refusal:  # RateLimited, LimitExceeded, UnknownAccount: this call only
            return refusal
        if not decisions:
            return []
        first = decisions[0]
        if first.request_count is not None:
            connection.execute(sql.count_request_sql, first.request_count)
        created_at, expires_at = sql.timestamp(now), sql.timestamp(first.admission.expires_at)
        shelved_until = first.reservation["shelved_until"]
        if shelved_until is not None:  # the same for each: admitted ahead, at one `now`
            shelved_until = sql.timestamp(shelved_until)
        for decision in decisions:
            values = decision.reservation
            values["created_at"] = created_at
            values["expires_at"] = expires_at
            values["shelved_until"] = shelved_until
            connection.execute(sql.insert_sql, values)
        return [decision.admission for decision in decisions]

    # -- back on the event loop ----------------------------------------------------------

    def _deliver(self, work: _Work, outcome: list[Admission] | BaseException | None) -> None:
        future = work.future
        assert future is not None  # only work with a waiting caller is delivered
        if future.cancelled():
            if isinstance(outcome, list):
                # Nobody will use (or settle) these reservations: give the money back now.
                for admission in outcome:
                    self._queue.put(_Release(admission.reservation_id))
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif isinstance(work, _Admit):
            assert isinstance(outcome, list)
            work.future.set_result(outcome)
        elif work.future is not None:
            work.future.set_result(None)
