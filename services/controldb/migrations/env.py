"""Alembic environment for the control database.

Two ways in:
- `controldb.migrate()` hands over an open connection in `config.attributes["connection"]`
  (it holds the migration lock on that connection);
- the Alembic CLI (see alembic.ini) connects with `AIG_DATABASE_URL` or `sqlalchemy.url`.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from controldb.engine import create_engine_from_url
from controldb.models import Base

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_from_url(url: str) -> None:
    engine = create_engine_from_url(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run against a database")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = os.environ.get("AIG_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set AIG_DATABASE_URL to the control database URL")
    asyncio.run(run_migrations_from_url(url))


main()
