"""Settlement's two writers: SQLAlchemy Core (PostgreSQL) and precompiled statements on the
bare sqlite3 connection (an SQLite file). They must write the same rows, settle each event
once, and the SQLite one must not report a commit before it is on disk."""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from controldb_fakes import UtcClock
from keyed_accounts import keyed_account
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import async_sessionmaker

from controldb import KeyStore, create_engine_from_url, migrate
from controldb.engine import create_sync_sqlite_engine
from controldb.models import sqlite_timestamp_text
from controldb.money import Money
from controldb.settlement import (
    SettlementWrites,
    SqliteSettlementStatements,
    UsageSettlement,
    _per_second,
    write_with_core,
)
from controldb.sync_writer import SyncSqliteWriter

SETTLED_AT = datetime(2026, 12, 5, 14, 0, 0, 123456, tzinfo=UTC)


def _item(
    event_id: str,
    account_id: str,
    key_id: str,
    billed: int,
    *,
    reservation_id: str | None = None,
    workspace_id: str | None = None,
    occurred_at: datetime = datetime(2026, 12, 5, 13, 59, 1, 5, tzinfo=UTC),
) -> UsageSettlement:
    return UsageSettlement(
        event_id=event_id,
        account_id=account_id,
        key_id=key_id,
        workspace_id=workspace_id,
        reservation_id=reservation_id,
        billed_nano_usd=billed,
        occurred_at=occurred_at,
    )


@pytest.fixture
async def twin_files(tmp_path: Path) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Two identical migrated SQLite files: two accounts with credits, a key each, and three
    live reservations."""
    first = f"sqlite+aiosqlite:///{tmp_path}/first.db"
    await migrate(first)
    engine = create_engine_from_url(first)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"pepper")
    money = Money(sessions)
    ids: dict[str, Any] = {}
    for name in ("a", "b"):
        account = await store.create_account(name)
        key, _ = await store.create_key(account.id, "k")
        await money.add_credits(account.id, "grant", 10_000_000)
        ids[name] = (account.id, key.id)
    first_account, first_key = ids["a"]
    ids["reservations"] = [
        (await money.admit(first_account, first_key, 1000)).reservation_id for _ in range(3)
    ]
    await money.aclose()
    await engine.dispose()
    source = sqlite3.connect(tmp_path / "first.db")
    target = sqlite3.connect(tmp_path / "second.db")
    source.backup(target)
    source.close()
    target.close()
    yield first, f"sqlite+aiosqlite:///{tmp_path}/second.db", ids


def _dump(path: str) -> dict[str, list[tuple[Any, ...]]]:
    database = sqlite3.connect(path.split("///", 1)[1])
    try:
        return {
            table: database.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2").fetchall()
            for table, columns in {
                "accounts": "id, balance_nano_usd",
                "spend_counters": "scope, scope_id, period, spent_nano_usd",
                "settlements": "event_id, account_id, billed_nano_usd, occurred_at, settled_at",
                "reservations": "id, account_id",
            }.items()
        }
    finally:
        database.close()


async def test_the_sqlite_statements_write_what_the_core_statements_write(
    twin_files: tuple[str, str, dict[str, Any]],
) -> None:
    core_url, sqlite_url, ids = twin_files
    (a, a_key), (b, b_key) = ids["a"], ids["b"]
    held = ids["reservations"]
    first_batch = [
        _item("e1", a, a_key, 700, reservation_id=held[0]),
        _item("e2", b, b_key, 500),
    ]
    second_batch = [
        _item("e1", a, a_key, 700, reservation_id=held[0]),  # redelivered
        _item("e3", a, a_key, 0, reservation_id=held[1]),  # free: released, no spend
        _item(
            "e4",
            a,
            a_key,
            300,
            reservation_id=held[2],
            workspace_id="ws-1",
            occurred_at=datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        _item("e5", b, b_key, 250, workspace_id="ws-1"),
        _item("e5", b, b_key, 250, workspace_id="ws-1"),  # twice in one batch
    ]

    core_engine = create_sync_sqlite_engine(core_url)
    settled_by_core = []
    for batch in (first_batch, second_batch):
        with core_engine.begin() as connection:
            settled_by_core.append(write_with_core(connection, batch, SETTLED_AT))
    core_engine.dispose()

    writer = SyncSqliteWriter(sqlite_url)
    statements = SqliteSettlementStatements()
    settled_by_sqlite = []
    for batch in (first_batch, second_batch):
        settle = functools.partial(
            statements.settle,
            items=batch,
            planned=SettlementWrites.of(batch),
            settled_at=SETTLED_AT,
        )
        settled_by_sqlite.append(await writer.transaction(settle))
    await writer.aclose()

    assert settled_by_core == settled_by_sqlite == [2, 3]
    written = _dump(sqlite_url)
    assert written == _dump(core_url)
    assert written["reservations"] == []
    assert dict(written["accounts"]) == {a: 10_000_000 - 1000, b: 10_000_000 - 750}
    assert (("workspace", "ws-1", "2026-11", 300)) in written["spend_counters"]
    assert (("workspace", "ws-1", "2026-12", 250)) in written["spend_counters"]


async def test_a_settlement_is_on_disk_before_it_returns_and_syncs_outside_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits without waiting for the disk (synchronous=NORMAL) so that the
    write lock is not held through an fsync; the WAL must then be synced before the caller
    hears of the commit (billing acknowledges its Kafka batch right after)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    database = tmp_path / "control.db"
    syncs: list[tuple[str, bool, int]] = []
    real_fsync = os.fsync

    def observed_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        other = sqlite3.connect(database, isolation_level=None, timeout=0)
        try:
            try:
                other.execute("BEGIN IMMEDIATE")  # fails at once if the lock is still held
                other.execute("ROLLBACK")
                lock_free = True
            except sqlite3.OperationalError:
                lock_free = False
            committed = other.execute("SELECT count(*) FROM settlements").fetchone()[0]
        finally:
            other.close()
        syncs.append((path, lock_free, committed))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", observed_fsync)
    writer = SyncSqliteWriter(url)
    statements = SqliteSettlementStatements()
    items = [_item("e1", "no-such-account", "k", 0)]
    try:
        settled = await writer.transaction(
            lambda connection: statements.settle(
                connection, items, SettlementWrites.of(items), SETTLED_AT
            )
        )
    finally:
        await writer.aclose()
    assert settled == 1
    assert syncs == [(f"{database}-wal", True, 1)]


async def test_both_admission_paths_store_a_reservation_expiry_alike(tmp_path: Path) -> None:
    """The group commit runs precompiled statements on the bare connection, as settlement
    does on SQLite; its timestamps must be stored as SQLAlchemy stores them (it once added
    "+00:00", which compares as a different string from the ORM's)."""
    world = await keyed_account(f"sqlite+aiosqlite:///{tmp_path}/control.db")
    clock = UtcClock(datetime(2026, 12, 5, 14, 0, 0, 250000, tzinfo=UTC))
    held = []
    for group_commit in (True, False):
        money = Money(world.sessions, group_commit=group_commit, clock=clock)
        await money.add_credits(world.account_id, "grant", 1_000_000)
        held.append((await money.admit(world.account_id, world.key_id, 1000)).reservation_id)
        await money.aclose()
    await world.engine.dispose()
    database = sqlite3.connect(tmp_path / "control.db")
    stored = dict(database.execute("SELECT id, expires_at FROM reservations").fetchall())
    database.close()
    by_group_commit, by_orm = stored[held[0]], stored[held[1]]
    assert by_group_commit == by_orm == "2026-12-05 14:15:00.250000"


async def test_a_settlement_waits_out_a_held_write_lock_and_sees_what_it_committed(
    tmp_path: Path,
) -> None:
    """Another writer (an edge admitting) holds SQLite's lock: the settlement begins once it
    is released, inside the same 5 s every connection waits, and reads that writer's commit:
    an event it settled is not settled again."""
    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    holder = sqlite3.connect(tmp_path / "control.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO settlements (event_id, account_id, billed_nano_usd, occurred_at,"
        " settled_at) VALUES ('e0', 'acct', 0, '2026-12-05 13:00:00', '2026-12-05 13:00:01')"
    )
    writer = SyncSqliteWriter(url)
    statements = SqliteSettlementStatements()
    items = [_item("e0", "acct", "k", 0), _item("e1", "acct", "k", 0)]
    settling = asyncio.ensure_future(
        writer.transaction(
            lambda connection: statements.settle(
                connection, items, SettlementWrites.of(items), SETTLED_AT
            )
        )
    )
    try:
        await asyncio.sleep(0.3)
        assert not settling.done()  # waiting for the lock, not failed
        holder.execute("COMMIT")
        assert await asyncio.wait_for(settling, 5) == 1
    finally:
        holder.close()
        await writer.aclose()


def test_the_per_second_timestamp_text_is_the_types_own() -> None:
    processor = sqlite_timestamp_text(SQLiteDialect_pysqlite(paramstyle="named"))
    text = _per_second(processor)
    start = datetime(2026, 12, 31, 23, 59, 58, 999_998, tzinfo=UTC)
    moments = [start + timedelta(microseconds=step) for step in range(0, 3_000_000, 250_001)]
    moments += [
        datetime(2026, 12, 5, 13, 59, 1, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 13, 59, 1, 5, tzinfo=UTC),  # the second seen before
        datetime(2026, 12, 6, 1, 59, 1, 5, tzinfo=timezone(timedelta(hours=12))),  # the same
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    ]
    for moment in moments + moments:
        assert text(moment) == processor(moment)
    with pytest.raises(ValueError, match="naive"):
        text(datetime(2026, 12, 5, 13, 59, 1))
