"""Admission on PostgreSQL without the ORM: the same statements, compiled once for asyncpg.

Through an AsyncSession an admission took ~1.2 ms on a local server, of which the server's
work and the round trips (BEGIN, the account's lock, LIMITS_QUERY, the insert, COMMIT) were
~0.3 ms. The rest was the session, the pool's pre-ping on every checkout, and SQLAlchemy
processing parameters and rows statement by statement (`python -m bench.reservations`).
Here the statements are SQLAlchemy's own (LOCK_ACCOUNT, LIMITS_QUERY, COUNT_REQUEST, the
reservation's insert and delete), compiled once for the asyncpg dialect and run on a small
asyncpg pool of their own; decide_admissions decides exactly as on every other path. The
same was done for SQLite (controldb.group_commit), for the same reason.

The pool: ADMISSION_CONNECTIONS per process, beside the engine's pool, opened with the
engine's own connect arguments (host, credentials, TLS). It has no pre-ping: a connection
found dead (the server restarted, a proxy dropped it) fails a statement before COMMIT was
sent, so nothing was reserved: the pool's connections are replaced and the admission is
tried once more on a new one. A failure during COMMIT is not retried: whether it committed
is unknown, and a reservation made then holds its amount only until it expires, as one
left by a router that died.

Errors reach the caller as SQLAlchemy's, as they did through the session, so the edge keeps
one mapping: an unreachable server is an OperationalError (503, retry), a refusal a
DBAPIError carrying the driver's error (with its SQLSTATE) as `orig`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import bindparam, delete, insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from controldb.admission import (
    COUNT_REQUEST,
    LIMITS_QUERY,
    LOCK_ACCOUNT,
    Admission,
    Clock,
    RoomToKeep,
    decide_admissions,
    limits_parameters,
)
from controldb.models import Reservation

# An admission holds its connection for a few hundred microseconds: four connections admit
# thousands of calls a second, and calls of one account queue on its row lock whatever the
# pool's size.
ADMISSION_CONNECTIONS = 4
# Connect arguments SQLAlchemy's asyncpg dialect consumes itself; asyncpg.connect refuses them.
_SQLALCHEMY_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")
# What a dead or unreachable server raises: the statement never ran, or its outcome is lost.
# A connection whose backend was terminated while it sat in the pool (the server sent its
# FATAL unasked) fails its next statement with an InternalClientError.
_CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


@dataclass(frozen=True, slots=True)
class _Statement:
    """SQL in asyncpg's positional style, with each parameter's name, the constants the
    statement binds itself, and the bind processing of each parameter's type (UTCDateTime
    insists on aware datetimes and stores them in UTC)."""

    sql: str
    names: tuple[str, ...]
    constants: Mapping[str, Any]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = values[name] if name in values else self.constants[name]
            arguments.append(value if process is None or value is None else process(value))
        return arguments


def _compiled(statement: Any, engine: AsyncEngine) -> _Statement:
    dialect = engine.dialect
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    numbers = {int(n) for n in re.findall(r"\$(\d+)", str(compiled))}
    # asyncpg binds by position; a parameter used twice must be one $n, bound once.
    if numbers != set(range(1, len(names) + 1)):
        raise RuntimeError(f"unexpected parameters in {statement!r}: {sorted(numbers)}, {names}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    constants = {k: v for k, v in compiled.params.items() if v is not None}
    return _Statement(str(compiled), names, constants, processors)


async def _roll_back_if_open(connection: asyncpg.Connection) -> None:
    """The pool's reset when a connection comes back. asyncpg's default also runs RESET ALL,
    UNLISTEN and the like: a round trip per admission for state these statements never set."""
    if not connection.is_closed() and connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def _discard(pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
    """Closes a connection that failed, and has the pool replace every other one at its next
    use: a dropped connection mostly means the server restarted, and then the idle ones are
    dead too. The driver does not notice that on an idle connection by itself (the server's
    goodbye leaves it in a state its next statement fails on), which the engine's pool
    covers with a pre-ping per checkout. A connection the driver found closed itself is
    detached from the pool and refuses every call."""
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()
    await pool.expire_connections()


def _as_sqlalchemy_error(error: BaseException, statement: str) -> DBAPIError:
    if isinstance(error, _CONNECTION_LOST):
        return OperationalError(statement, None, error)
    return DBAPIError(statement, None, error)


class PostgresAdmissions:
    def __init__(self, engine: AsyncEngine, reservation_ttl: timedelta, *, clock: Clock) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("PostgresAdmissions needs a PostgreSQL engine")
        args, options = engine.dialect.create_connect_args(engine.url)
        for name in _SQLALCHEMY_ONLY:
            options.pop(name, None)
        self._connect_args, self._connect_options = list(args), dict(options)
        self._ttl = reservation_ttl
        self._clock = clock
        self._lock_account = _compiled(LOCK_ACCOUNT, engine)
        self._limits = _compiled(LIMITS_QUERY, engine)
        self._count_request = _compiled(COUNT_REQUEST, engine)
        self._insert = _compiled(insert(Reservation), engine)
        self._release = _compiled(
            delete(Reservation).where(Reservation.id == bindparam("reservation_id")), engine
        )
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def admit_many(
        self,
        account_id: str,
        key_id: str,
        worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None = None,
    ) -> list[Admission]:
        """One transaction: the account's row lock, LIMITS_QUERY, decide_admissions (up to
        `count`), the request count if the key has a rate limit, the reservations."""
        now = self._clock()
        lost: BaseException | None = None
        for _ in range(2):
            pool = await self._connections()
            async with pool.acquire() as connection:
                transaction = connection.transaction()
                try:
                    await transaction.start()
                    admissions = await self._reserve(
                        connection, account_id, key_id, worst_case_nano_usd, count, ahead, now
                    )
                except _CONNECTION_LOST as error:
                    # Before COMMIT: nothing was reserved. The connection is closed, so the
                    # pool opens a new one for the next try.
                    lost = error
                    await _discard(pool, connection)
                    continue
                except BaseException as error:
                    # A refusal (LimitExceeded, RateLimited, UnknownAccount) or the server's.
                    with contextlib.suppress(*_CONNECTION_LOST):
                        await transaction.rollback()
                    if isinstance(error, asyncpg.PostgresError):
                        raise _as_sqlalchemy_error(error, "admission") from error
                    raise
                try:
                    await transaction.commit()
                except (*_CONNECTION_LOST, asyncpg.PostgresError) as error:
                    raise _as_sqlalchemy_error(error, "COMMIT of an admission") from error
                return admissions
        assert lost is not None
        raise _as_sqlalchemy_error(lost, "admission") from lost

    async def _reserve(
        self,
        connection: asyncpg.Connection,
        account_id: str,
        key_id: str,
        worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None,
        now: datetime,
    ) -> list[Admission]:
        # The lock first, in its own statement: under READ COMMITTED, LIMITS_QUERY then
        # takes a snapshot that includes every reservation committed by whoever held the
        # lock before us.
        lock = self._lock_account
        await connection.execute(lock.sql, *lock.arguments({"account_id": account_id}))
        limits = self._limits
        found = await connection.fetchrow(
            limits.sql, *limits.arguments(limits_parameters(account_id, key_id, now))
        )
        decisions = decide_admissions(
            None if found is None else dict(found.items()),
            account_id,
            key_id,
            worst_case_nano_usd,
            now,
            self._ttl,
            count,
            ahead,
        )
        if not decisions:
            return []
        first = decisions[0]
        if first.request_count is not None:
            counted = self._count_request
            await connection.execute(counted.sql, *counted.arguments(first.request_count))
        rows = [self._insert.arguments(decision.reservation) for decision in decisions]
        if len(rows) == 1:
            await connection.execute(self._insert.sql, *rows[0])
        else:  # one round trip for them all
            await connection.executemany(self._insert.sql, rows)
        return [decision.admission for decision in decisions]

    async def release(self, reservation_id: str) -> None:
        """Deletes one reservation (its own transaction); idempotent, so retried once on a
        connection found dead."""
        values = {"reservation_id": reservation_id}
        lost: BaseException | None = None
        for _ in range(2):
            pool = await self._connections()
            async with pool.acquire() as connection:
                try:
                    await connection.execute(self._release.sql, *self._release.arguments(values))
                    return
                except _CONNECTION_LOST as error:
                    lost = error
                    await _discard(pool, connection)
                except asyncpg.PostgresError as error:
                    raise _as_sqlalchemy_error(error, "release of a reservation") from error
        assert lost is not None
        raise _as_sqlalchemy_error(lost, "release of a reservation") from lost

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        *self._connect_args,
                        min_size=1,
                        max_size=ADMISSION_CONNECTIONS,
                        reset=_roll_back_if_open,
                        **self._connect_options,
                    )
                except (*_CONNECTION_LOST, asyncpg.PostgresError) as error:
                    raise _as_sqlalchemy_error(error, "connect") from error
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
