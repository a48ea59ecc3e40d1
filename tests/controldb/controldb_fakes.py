"""Test doubles and set-up shared by the control database tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controldb import KeyStore, create_engine_from_url, migrate


class FakeClock:
    """A monotonic clock that moves only when told to, for TTL tests without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class UtcClock:
    """A UTC wall clock that moves only when told to, for money's periods and windows."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now


@dataclass
class KeyedAccount:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: KeyStore
    account_id: str
    key_id: str


async def keyed_account(url: str, name: str = "a") -> KeyedAccount:
    """The control DB at `url` migrated, with one account and one key of it. The caller
    disposes of the engine."""
    await migrate(url)
    engine = create_engine_from_url(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    store = KeyStore(sessions, b"pepper")
    account = await store.create_account(name)
    key, _ = await store.create_key(account.id, "k")
    return KeyedAccount(engine, sessions, store, account.id, key.id)
