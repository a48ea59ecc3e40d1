from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import asyncpg
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
