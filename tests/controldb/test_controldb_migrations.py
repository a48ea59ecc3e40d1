from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pg import asyncpg_dsn, create_database
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from controldb import Base, KeyStore, create_engine_from_url, migrate
from controldb.migrate import POSTGRES_MIGRATION_LOCK_KEY, alembic_config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    engine = create_engine_from_url(url)
    try:
        async with engine.connect() as connection:

            def read(sync_connection: Connection) -> str | None:
                return MigrationContext.configure(sync_connection).get_current_revision()

            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def test_migrate_creates_the_tables_at_head(database_url: str) -> None:
    assert await current_revision(database_url) is None

    await migrate(database_url)

    assert await current_revision(database_url) == head_revision()
    engine = create_engine_from_url(database_url)
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        key_indexes = await connection.run_sync(lambda c: inspect(c).get_indexes("api_keys"))
    await engine.dispose()
    assert {"accounts", "api_keys", "alembic_version"} <= tables
    by_name = {index["name"]: index for index in key_indexes}
    assert by_name["ix_api_keys_key_hash"]["unique"]
    assert by_name["ix_api_keys_key_hash"]["column_names"] == ["key_hash"]


async def test_models_describe_exactly_what_the_migrations_create(migrated_url: str) -> None:
    engine = create_engine_from_url(migrated_url)
    async with engine.connect() as connection:

        def diff(sync_connection: Connection) -> list[object]:
            context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        differences = await connection.run_sync(diff)
    await engine.dispose()
    assert differences == []


async def test_migrating_again_is_a_no_op_that_keeps_data(migrated_url: str, pepper: bytes) -> None:
    engine = create_engine_from_url(migrated_url)
    store = KeyStore(engine, pepper)
    account = await store.create_account("kept")

    await migrate(migrated_url)

    assert await current_revision(migrated_url) == head_revision()
    fetched = await store.get_account(account.id)
    assert fetched is not None
    assert fetched.name == "kept"
    await engine.dispose()


async def test_a_database_migrated_by_a_later_release_is_left_as_it_is(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A later release's migration ran (before its rollout), and a pod of this release
    # starts: a restart during the rollout, or a rollback. Alembic alone refuses to run.
    engine = create_engine_from_url(migrated_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()

    await migrate(migrated_url)

    assert await current_revision(migrated_url) == "9999"
    assert "at revision 9999, newer than this release knows" in caplog.text


async def test_concurrent_migrations_both_succeed(database_url: str) -> None:
    await asyncio.gather(migrate(database_url), migrate(database_url), migrate(database_url))

    assert await current_revision(database_url) == head_revision()


async def test_postgres_migration_waits_for_the_advisory_lock(
    postgres_url: str,
) -> None:
    url = await create_database(postgres_url)
    holder = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", POSTGRES_MIGRATION_LOCK_KEY)
        migration = asyncio.create_task(migrate(url))
        # Another process's migration is simulated by `holder`; ours must queue behind it.
        for _ in range(500):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if waiting or migration.done():
                break
            await asyncio.sleep(0.01)
        assert not migration.done()
        assert waiting == 1
        await holder.execute("SELECT pg_advisory_unlock($1)", POSTGRES_MIGRATION_LOCK_KEY)
        await migration
    finally:
        await holder.close()
    assert await current_revision(url) == head_revision()


async def test_sqlite_migration_waits_for_the_lock_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/locked.db"
    lock_fd = os.open(tmp_path / "locked.db.migrate-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # as another process's migration would
        migration = asyncio.create_task(migrate(url))
        await asyncio.sleep(0.2)
        assert not migration.done()
        assert await current_revision(url) is None
    finally:
        os.close(lock_fd)
    await migration
    assert await current_revision(url) == head_revision()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/wal.db"
    engine = create_engine_from_url(url)
    async with engine.connect() as connection:
        journal_mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
        foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
        busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
    await engine.dispose()
    assert journal_mode == "wal"
    assert foreign_keys == 1
    assert busy_timeout > 0


async def test_the_running_totals_start_from_the_reservations_already_held(
    database_url: str,
) -> None:
    """Migration 0010 on a database with calls in flight: each account's, key's and
    workspace's total starts at what its reservation rows hold, and the triggers keep it
    from there."""
    engine = create_engine_from_url(database_url)
    async with engine.begin() as connection:

        def to_0009(sync_connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync_connection
            command.upgrade(config, "0009")

        await connection.run_sync(to_0009)
        now = "2026-12-06 12:00:00"
        for statement in (
            "INSERT INTO accounts (id, name, created_at, balance_nano_usd, tier, "
            "markup_basis_points, rolling_30d_spend_nano_usd) "
            f"VALUES ('acc_a', 'a', '{now}', 0, 'starter', 4000, 0)",
            f"INSERT INTO workspaces (id, account_id, name, created_at) "
            f"VALUES ('ws_a', 'acc_a', 'w', '{now}')",
            "INSERT INTO api_keys (id, account_id, name, key_hash, key_prefix, created_at, "
            f"workspace_id, rpm_current, rpm_previous) VALUES "
            f"('key_1', 'acc_a', 'k1', 'h1', 'p1', '{now}', 'ws_a', 0, 0), "
            f"('key_2', 'acc_a', 'k2', 'h2', 'p2', '{now}', NULL, 0, 0)",
            "INSERT INTO reservations (id, account_id, key_id, workspace_id, amount_nano_usd, "
            f"created_at, expires_at) VALUES "
            f"('r1', 'acc_a', 'key_1', 'ws_a', 1000, '{now}', '{now}'), "
            f"('r2', 'acc_a', 'key_1', 'ws_a', 20000, '{now}', '{now}'), "
            f"('r3', 'acc_a', 'key_2', NULL, 300000, '{now}', '{now}')",
        ):
            await connection.execute(text(statement))
    await migrate(database_url)

    async def totals() -> dict[str, int]:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT id, held_nano_usd FROM accounts UNION ALL "
                    "SELECT id, held_nano_usd FROM api_keys UNION ALL "
                    "SELECT id, held_nano_usd FROM workspaces"
                )
            )
            return {row_id: held for row_id, held in rows}

    assert await totals() == {"acc_a": 321_000, "key_1": 21_000, "key_2": 300_000, "ws_a": 21_000}
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM reservations WHERE id = 'r2'"))
    assert await totals() == {"acc_a": 301_000, "key_1": 1_000, "key_2": 300_000, "ws_a": 1_000}
    await engine.dispose()
