"""Accounts and API keys: creation, revocation and the authentication hot path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controldb.cache import TTLCache
from controldb.ids import (
    ACCOUNT_ID_PREFIX,
    API_KEY_ID_PREFIX,
    API_KEY_PREFIX,
    KeyHasher,
    display_prefix,
    new_plain_key,
    random_id,
)
from controldb.models import Account, ApiKey, utcnow

DEFAULT_CACHE_TTL_S = 5.0
# Unknown keys are remembered only briefly: enough to absorb a client retrying a bad key
# in a loop, short enough that a key created on another replica works almost at once.
DEFAULT_MISS_TTL_S = 1.0
DEFAULT_CACHE_MAX_ENTRIES = 10_000
# Anything longer is not one of our keys; refuse it before spending an HMAC on it.
MAX_PLAIN_KEY_LENGTH = 256


class ControlDBError(Exception):
    """Base class of the control database's domain errors."""


class AccountNotFound(ControlDBError):
    def __init__(self, account_id: str) -> None:
        super().__init__(f"No account with id '{account_id}'")
        self.account_id = account_id


class InvalidPlainKey(ControlDBError):
    """A caller-supplied plain key does not have the `sk-aig-...` format."""


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """Who is calling: the result of a successful `KeyStore.authenticate`."""

    key_id: str
    key_name: str
    account_id: str
    account_name: str
    workspace_id: str | None = None


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    account_id: str
    key_id: str
    plain_key: str
    created_key: bool


class KeyStore:
    """Accounts and API keys in the control database.

    Plain keys exist only in the return value of `create_key`; the database holds
    HMAC-SHA256(pepper, key). `authenticate` answers from an in-process cache for
    `cache_ttl` seconds after a lookup, so a hit costs one HMAC and a dict lookup.

    Revocation is immediate in the process that calls `revoke_key`. Other replicas keep
    accepting a revoked key until their cached entry expires: at most `cache_ttl`
    seconds (5 s by default).
    """

    def __init__(
        self,
        db: AsyncEngine | async_sessionmaker[AsyncSession],
        pepper: bytes,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL_S,
        miss_ttl: float = DEFAULT_MISS_TTL_S,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not pepper:
            raise ValueError("the key pepper must not be empty")
        if isinstance(db, AsyncEngine):
            db = async_sessionmaker(db, expire_on_commit=False)
        self._sessions = db
        self._hash_key = KeyHasher(pepper)
        self._cache_ttl = cache_ttl
        self._miss_ttl = min(miss_ttl, cache_ttl)
        self._cache: TTLCache[str, AuthenticatedKey | None] = TTLCache(cache_max_entries, clock)
        # Bumped on every local invalidation. A lookup that started before a revocation
        # must not put its (now stale) answer into the cache after the revocation cleared it.
        self._invalidations = 0
        self._lookups: dict[str, asyncio.Future[AuthenticatedKey | None]] = {}

    # -- accounts ---------------------------------------------------------------------

    async def create_account(self, name: str) -> Account:
        account = Account(id=random_id(ACCOUNT_ID_PREFIX), name=name, created_at=utcnow())
        async with self._sessions() as session, session.begin():
            session.add(account)
            await session.flush()
            # Detached before the commit, so the returned object keeps its loaded values
            # whatever `expire_on_commit` the caller's sessionmaker uses.
            session.expunge(account)
        return account

    async def get_account(self, account_id: str) -> Account | None:
        async with self._sessions() as session:
            return await session.get(Account, account_id)

    async def find_account_by_name(self, name: str) -> Account | None:
        """The oldest account with this name (names are labels, not unique)."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Account)
                .where(Account.name == name)
                .order_by(Account.created_at, Account.id)
                .limit(1)
            )
            return result.scalar_one_or_none()

    # -- keys -------------------------------------------------------------------------

    async def create_key(self, account_id: str, name: str) -> tuple[ApiKey, str]:
        """A new key for the account: the stored record and the plain key (shown once).

        Raises AccountNotFound for an unknown account.
        """
        plain_key = new_plain_key()
        record = await self._insert_key(account_id, name, plain_key)
        return record, plain_key

    async def _insert_key(self, account_id: str, name: str, plain_key: str) -> ApiKey:
        key_hash = self._hash_key(plain_key)
        record = ApiKey(
            id=random_id(API_KEY_ID_PREFIX),
            account_id=account_id,
            name=name,
            key_hash=key_hash,
            key_prefix=display_prefix(plain_key),
            created_at=utcnow(),
            revoked_at=None,
        )
        async with self._sessions() as session, session.begin():
            if await session.get(Account, account_id) is None:
                raise AccountNotFound(account_id)
            session.add(record)
            await session.flush()
            session.expunge(record)
        # A lookup of this key just before it existed may have cached a miss.
        self._invalidate(key_hash)
        return record

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self._sessions() as session:
            return await session.get(ApiKey, key_id)

    async def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        """Keys, revoked ones included, oldest first; every account's when `account_id` is None."""
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if account_id is not None:
            query = query.where(ApiKey.account_id == account_id)
        async with self._sessions() as session:
            return list((await session.execute(query)).scalars())

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False when no key has this id. Revoking twice is harmless.

        This process stops accepting the key at once; other replicas within their
        cache TTL (see the class docstring).
        """
        async with self._sessions() as session, session.begin():
            record = await session.get(ApiKey, key_id)
            if record is None:
                return False
            if record.revoked_at is None:
                record.revoked_at = utcnow()
            key_hash = record.key_hash
        self._invalidate(key_hash)
        return True

    async def authenticate(self, plain_key: str) -> AuthenticatedKey | None:
        """The caller behind `plain_key`, or None for an unknown or revoked key."""
        if not plain_key.startswith(API_KEY_PREFIX) or len(plain_key) > MAX_PLAIN_KEY_LENGTH:
            return None
        key_hash = self._hash_key(plain_key)
        cached = self._cache.get(key_hash)
        if cached is not None:
            return cached.value

        # Single flight: when an entry expires under load, every call in flight with that key
        # misses at once; one database lookup answers them all.
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup_and_cache(key_hash))
            self._lookups[key_hash] = lookup
            lookup.add_done_callback(lambda done: self._forget_lookup(key_hash, done))
        # Shielded: one caller giving up must not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _lookup_and_cache(self, key_hash: str) -> AuthenticatedKey | None:
        invalidations_before = self._invalidations
        found = await self._lookup(key_hash)
        if self._invalidations == invalidations_before:
            ttl = self._cache_ttl if found is not None else self._miss_ttl
            self._cache.put(key_hash, found, ttl)
        return found

    async def _lookup(self, key_hash: str) -> AuthenticatedKey | None:
        query = (
            select(ApiKey.id, ApiKey.name, Account.id, Account.name, ApiKey.workspace_id)
            .join(Account, Account.id == ApiKey.account_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).one_or_none()
        if row is None:
            return None
        key_id, key_name, account_id, account_name, workspace_id = row
        return AuthenticatedKey(
            key_id=key_id,
            key_name=key_name,
            account_id=account_id,
            account_name=account_name,
            workspace_id=workspace_id,
        )

    def _forget_lookup(self, key_hash: str, done: asyncio.Future[AuthenticatedKey | None]) -> None:
        if self._lookups.get(key_hash) is done:
            del self._lookups[key_hash]

    def _invalidate(self, key_hash: str) -> None:
        self._invalidations += 1
        self._cache.pop(key_hash)
        # Callers from now on must not join a lookup that began before the change.
        self._lookups.pop(key_hash, None)

    def clear_cache(self) -> None:
        self._invalidations += 1
        self._cache.clear()
        self._lookups.clear()

    # -- bootstrap ----------------------------------------------------------------------

    async def ensure_demo(
        self, account_name: str, key_name: str, plain_key: str | None
    ) -> DemoCredentials:
        """Idempotently provide a demo account and a working key for `make up`.

        The account is the oldest one named `account_name` (created if none). With
        `plain_key` (the key `make up` persisted earlier), that exact key is made to
        exist; if it was revoked, or is None, a fresh key is created. The caller persists
        `plain_key` of the result. Meant for one bootstrapping process at a time.
        """
        account = await self.find_account_by_name(account_name)
        if account is None:
            account = await self.create_account(account_name)

        if plain_key is not None:
            if not plain_key.startswith(API_KEY_PREFIX):
                raise InvalidPlainKey(f"a demo key must start with '{API_KEY_PREFIX}'")
            existing = await self._find_key_by_hash(self._hash_key(plain_key))
            if existing is None:
                record = await self._insert_key(account.id, key_name, plain_key)
                return DemoCredentials(account.id, record.id, plain_key, created_key=True)
            if existing.revoked_at is None:
                return DemoCredentials(
                    existing.account_id, existing.id, plain_key, created_key=False
                )

        record, new_key = await self.create_key(account.id, key_name)
        return DemoCredentials(account.id, record.id, new_key, created_key=True)

    async def _find_key_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self._sessions() as session:
            result = await session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
            return result.scalar_one_or_none()
