"""Bring the control database to the newest schema, at start-up, from any number of replicas."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from controldb.engine import LoopLock, create_engine_from_url, is_postgres, is_sqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger("aig.controldb.migrate")

# Arbitrary, fixed 64-bit key; every aig process that migrates takes the same lock.
POSTGRES_MIGRATION_LOCK_KEY = 0x616967_6D696772  # "aig" "migr"


# Alembic keeps the running migration in module globals (`alembic.context`), so two
# upgrades interleaving on one event loop would trample each other, whatever database
# each targets.
_in_process_lock = LoopLock()


def alembic_config() -> Config:
    """Alembic configured in code, so no alembic.ini has to sit in the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    newer = set(MigrationContext.configure(connection).get_current_heads()) - known
    if newer:
        # A later release migrated this database (its migration runs before its pods
        # start), and a pod of this one started meanwhile: a restart during the rollout,
        # or a rollback. Each migration keeps the schema usable by the release before it,
        # so this one runs on it as it is, where alembic would refuse to start.
        log.warning(
            "the control DB is at revision %s, newer than this release knows; not migrating",
            ", ".join(sorted(newer)),
        )
        return
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(database_url: str) -> None:
    """Upgrade the database at `database_url` to the newest migration; a no-op when current.

    Safe to run from several processes at once. On PostgreSQL the upgrade runs in one
    transaction holding a transaction-scoped advisory lock: the second process waits,
    then finds the schema current. On SQLite a lock file next to the database serialises
    processes on the same machine (the only place a SQLite file can be shared).
    """
    async with _in_process_lock(), _sqlite_file_lock(database_url):
        engine = create_engine_from_url(database_url)
        try:
            async with engine.begin() as connection:
                if is_postgres(database_url):
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": POSTGRES_MIGRATION_LOCK_KEY},
                    )
                await connection.run_sync(_upgrade_to_head)
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def _sqlite_file_lock(database_url: str) -> AsyncIterator[None]:
    database = make_url(database_url).database if is_sqlite(database_url) else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # flock blocks; wait in a thread so the event loop keeps serving.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
