"""A migrated control DB with one account and one key: the set-up the control database tests
and the edge's admission tests share."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controldb import KeyStore, create_engine_from_url, migrate


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
