"""The admission writer's wait for SQLite's write lock: it polls instead of SQLite's busy
handler, whose sleeps (1, 2, 5, 10 ms …) made a call wait up to twice as long as the lock
was held. How long it waits is measured in bench/reservations.py; this checks what it does."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.engine.interfaces import DBAPIConnection

from controldb import engine as engine_module
from controldb import group_commit, migrate
from controldb.admission import UnknownAccount
from controldb.engine import SQLITE_BUSY_TIMEOUT_MS


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "lock.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.close()
    return path


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def _dbapi(connection: sqlite3.Connection) -> DBAPIConnection:
    """sqlite3's connection is what SQLAlchemy's DBAPI protocol describes."""
    return cast(DBAPIConnection, connection)


def test_the_writer_takes_the_lock_once_another_process_releases_it(tmp_path: Path) -> None:
    path = _database(tmp_path)
    holder, writer = _connect(path), _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    with group_commit.immediate(_dbapi(writer), poll=True):
        # The holder committed first: the writer's transaction sees its row.
        assert writer.execute("SELECT count(*) FROM t").fetchone() == (1,)
        writer.execute("INSERT INTO t VALUES (2)")
    released.join()
    assert holder.execute("SELECT count(*) FROM t").fetchone() == (2,)
    # The busy timeout the transaction's statements run under is back as it was.
    assert writer.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_MS,)


def test_the_writer_gives_up_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _database(tmp_path)
    holder, writer = _connect(path), _connect(path)
    monkeypatch.setattr(engine_module, "LOCK_WAIT_S", 0.05)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            pytest.raises(sqlite3.OperationalError, match="locked"),
            group_commit.immediate(_dbapi(writer), poll=True),
        ):
            pass
        assert not writer.in_transaction
        assert writer.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_MS,)
    finally:
        holder.execute("ROLLBACK")


async def test_neither_admission_connection_commits_through_an_fsync(tmp_path: Path) -> None:
    """Both connections that admit (the event loop's inline one and the writer thread's)
    commit with synchronous=NORMAL: a commit does not wait for the disk while it holds the
    file's one write lock, which every other edge and billing's settlements wait for."""
    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    admissions = group_commit.GroupCommitAdmissions(url, timedelta(minutes=10))
    try:
        # An unknown key is refused inline (the inline connection opens); a release always
        # runs on the writer thread (its connection opens).
        with pytest.raises(UnknownAccount):
            await admissions.admit_many("acc_none", "key_none", 1000, 1)
        await admissions.release("resv_none")
        connections = [admissions._inline, admissions._connection]
        normal = 1  # SQLite's code for synchronous=NORMAL (FULL, its default, is 2)
        for connection in connections:
            assert connection is not None
            driver = connection.driver_connection
            assert driver is not None
            assert driver.execute("PRAGMA synchronous").fetchone() == (normal,)
    finally:
        await admissions.aclose()
