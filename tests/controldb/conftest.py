from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from controldb_fakes import FakeClock
from pg import create_database

from controldb import KeyStore, create_engine_from_url, migrate

PEPPER = b"test-pepper-not-secret"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/control.db"
    server_url: str = request.getfixturevalue("postgres_url")
    return await create_database(server_url)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await migrate(database_url)
    return database_url


@pytest.fixture
def pepper() -> bytes:
    return PEPPER


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(migrated_url: str, clock: FakeClock) -> AsyncIterator[KeyStore]:
    engine = create_engine_from_url(migrated_url)
    yield KeyStore(engine, PEPPER, cache_ttl=5.0, miss_ttl=1.0, clock=clock)
    await engine.dispose()
