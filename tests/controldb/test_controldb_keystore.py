from __future__ import annotations

import asyncio
import hashlib
import hmac
import re

import pytest
from controldb_fakes import FakeClock
from sqlalchemy import text

from controldb import AccountNotFound, AuthenticatedKey, KeyStore, create_engine_from_url
from controldb.cache import TTLCache
from controldb.ids import KeyHasher, base62, hash_key, new_plain_key

KEY_FORMAT = re.compile(r"^sk-aig-[0-9A-Za-z]{43,}$")


async def all_stored_text(url: str) -> str:
    """Every value of every row of the key tables, as one string."""
    engine = create_engine_from_url(url)
    chunks: list[str] = []
    async with engine.connect() as connection:
        for table in ("accounts", "api_keys"):
            rows = await connection.execute(text(f"SELECT * FROM {table}"))
            chunks.extend(str(value) for row in rows for value in row)
    await engine.dispose()
    return "\n".join(chunks)


def test_plain_keys_have_the_documented_format() -> None:
    keys = {new_plain_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert KEY_FORMAT.match(key), key


def test_base62_keeps_leading_zero_bytes_and_a_fixed_width() -> None:
    assert base62(bytes(32)) == "0" * 43
    assert len(base62(b"\xff" * 32)) == 43
    assert base62(b"\x00\x3d") == "00z"  # 61 is the last digit of the alphabet


async def test_a_created_key_authenticates_as_its_account(store: KeyStore) -> None:
    account = await store.create_account("Acme")
    record, plain_key = await store.create_key(account.id, "ci")

    assert account.id.startswith("acct_")
    assert record.id.startswith("key_")
    assert KEY_FORMAT.match(plain_key)
    assert record.key_prefix == plain_key[:10]
    assert record.revoked_at is None
    assert await store.authenticate(plain_key) == AuthenticatedKey(
        key_id=record.id,
        key_name="ci",
        account_id=account.id,
        account_name="Acme",
        workspace_id=None,
    )


async def test_wrong_keys_do_not_authenticate(store: KeyStore) -> None:
    account = await store.create_account("Acme")
    _, plain_key = await store.create_key(account.id, "ci")

    assert await store.authenticate(new_plain_key()) is None
    assert await store.authenticate(plain_key[:-1]) is None
    assert await store.authenticate(plain_key + "x") is None
    assert await store.authenticate("") is None
    assert await store.authenticate(plain_key.replace("sk-aig-", "sk-")) is None


async def test_a_revoked_key_is_refused_at_once_despite_the_cache(store: KeyStore) -> None:
    account = await store.create_account("Acme")
    record, plain_key = await store.create_key(account.id, "ci")
    assert await store.authenticate(plain_key) is not None  # now cached

    assert await store.revoke_key(record.id) is True

    assert await store.authenticate(plain_key) is None
    revoked = await store.get_key(record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await store.revoke_key(record.id) is True  # idempotent


async def test_revoking_an_unknown_key_reports_false(store: KeyStore) -> None:
    assert await store.revoke_key("key_doesnotexist") is False


async def test_a_lookup_racing_a_revocation_does_not_cache_the_stale_answer(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await store.create_account("Acme")
    record, plain_key = await store.create_key(account.id, "ci")
    lookup = store._lookup

    async def lookup_then_revoke(key_hash: str) -> AuthenticatedKey | None:
        found = await lookup(key_hash)
        await store.revoke_key(record.id)  # lands while the lookup's answer is in flight
        return found

    monkeypatch.setattr(store, "_lookup", lookup_then_revoke)
    assert await store.authenticate(plain_key) is not None
    monkeypatch.setattr(store, "_lookup", lookup)

    assert await store.authenticate(plain_key) is None


async def test_concurrent_misses_share_one_lookup(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a cached key expires under load, the calls in flight must not all query the
    database (on SQLite each would take the write lock)."""
    account = await store.create_account("Acme")
    _, plain_key = await store.create_key(account.id, "ci")
    lookup = store._lookup
    calls = 0

    async def slow_lookup(key_hash: str) -> AuthenticatedKey | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return await lookup(key_hash)

    monkeypatch.setattr(store, "_lookup", slow_lookup)
    found = await asyncio.gather(*(store.authenticate(plain_key) for _ in range(50)))
    assert calls == 1
    assert {key.account_id if key else None for key in found} == {account.id}

    # A caller that gives up does not take the shared lookup down with it.
    store.clear_cache()
    quitter = asyncio.create_task(store.authenticate(plain_key))
    stayer = asyncio.create_task(store.authenticate(plain_key))
    await asyncio.sleep(0.01)
    quitter.cancel()
    assert (await stayer) is not None
    assert calls == 2


async def test_other_replicas_see_a_revocation_within_the_ttl(
    store: KeyStore, migrated_url: str, pepper: bytes, clock: FakeClock
) -> None:
    account = await store.create_account("Acme")
    record, plain_key = await store.create_key(account.id, "ci")
    assert await store.authenticate(plain_key) is not None

    other_engine = create_engine_from_url(migrated_url)
    other_replica = KeyStore(other_engine, pepper)
    assert await other_replica.revoke_key(record.id)
    await other_engine.dispose()

    clock.advance(4.9)
    assert await store.authenticate(plain_key) is not None  # served from this replica's cache
    clock.advance(0.2)
    assert await store.authenticate(plain_key) is None


async def test_misses_are_cached_only_briefly(
    store: KeyStore, migrated_url: str, pepper: bytes, clock: FakeClock
) -> None:
    plain_key = new_plain_key()
    assert await store.authenticate(plain_key) is None  # miss, now cached

    other_engine = create_engine_from_url(migrated_url)
    other_replica = KeyStore(other_engine, pepper)
    await other_replica.ensure_demo("Demo", "demo", plain_key)
    await other_engine.dispose()

    assert await store.authenticate(plain_key) is None
    clock.advance(1.1)
    assert await store.authenticate(plain_key) is not None


async def test_creating_a_key_for_an_unknown_account_fails(store: KeyStore) -> None:
    with pytest.raises(AccountNotFound) as raised:
        await store.create_key("acct_missing", "ci")
    assert raised.value.account_id == "acct_missing"
    assert await store.list_keys() == []


async def test_the_database_never_holds_a_plain_key(
    store: KeyStore, migrated_url: str, pepper: bytes
) -> None:
    account = await store.create_account("Acme")
    record, plain_key = await store.create_key(account.id, "ci")

    stored = await all_stored_text(migrated_url)

    random_part = plain_key.removeprefix("sk-aig-")
    assert plain_key not in stored
    assert random_part[5:] not in stored  # nothing beyond the display prefix either
    expected_hash = hmac.new(pepper, plain_key.encode(), hashlib.sha256).hexdigest()
    assert record.key_hash == expected_hash
    assert expected_hash in stored


async def test_the_pepper_is_part_of_the_hash(store: KeyStore, migrated_url: str) -> None:
    account = await store.create_account("Acme")
    _, plain_key = await store.create_key(account.id, "ci")

    engine = create_engine_from_url(migrated_url)
    other_pepper = KeyStore(engine, b"a-different-pepper")
    assert await other_pepper.authenticate(plain_key) is None
    await engine.dispose()


async def test_list_keys_filters_by_account(store: KeyStore) -> None:
    first = await store.create_account("First")
    second = await store.create_account("Second")
    key_a, _ = await store.create_key(first.id, "a")
    key_b, _ = await store.create_key(first.id, "b")
    key_c, _ = await store.create_key(second.id, "c")

    assert {k.id for k in await store.list_keys(first.id)} == {key_a.id, key_b.id}
    assert [k.id for k in await store.list_keys(second.id)] == [key_c.id]
    assert len(await store.list_keys()) == 3


async def test_ensure_demo_with_a_persisted_key_is_idempotent(store: KeyStore) -> None:
    plain_key = new_plain_key()

    first = await store.ensure_demo("Demo", "demo", plain_key)
    second = await store.ensure_demo("Demo", "demo", plain_key)

    assert first.created_key is True
    assert second.created_key is False
    assert (second.account_id, second.key_id, second.plain_key) == (
        first.account_id,
        first.key_id,
        plain_key,
    )
    assert len(await store.list_keys()) == 1
    caller = await store.authenticate(plain_key)
    assert caller is not None
    assert caller.account_id == first.account_id


async def test_ensure_demo_replaces_a_revoked_or_missing_key(store: KeyStore) -> None:
    plain_key = new_plain_key()
    first = await store.ensure_demo("Demo", "demo", plain_key)
    await store.revoke_key(first.key_id)

    replaced = await store.ensure_demo("Demo", "demo", plain_key)
    generated = await store.ensure_demo("Demo", "demo", None)

    assert replaced.created_key and replaced.plain_key != plain_key
    assert generated.created_key and generated.plain_key not in (plain_key, replaced.plain_key)
    assert {first.account_id, replaced.account_id, generated.account_id} == {first.account_id}
    assert await store.authenticate(replaced.plain_key) is not None
    assert await store.authenticate(generated.plain_key) is not None


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(max_entries=2, clock=clock)
    cache.put("a", 1, ttl=10)
    cache.put("b", 2, ttl=10)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", 3, ttl=10)

    assert len(cache) == 2
    assert cache.get("b") is None
    entry = cache.get("a")
    assert entry is not None and entry.value == 1
    clock.advance(10)
    assert cache.get("a") is None


def test_an_empty_pepper_is_refused() -> None:
    engine = create_engine_from_url("sqlite+aiosqlite://")
    with pytest.raises(ValueError):
        KeyStore(engine, b"")


def test_the_key_stores_hasher_hashes_as_hash_key_does() -> None:
    """The store hashes with its pepper keyed once (KeyHasher); every hash already stored was
    made by hash_key, so the two must agree on every key and pepper, and keep no state
    between keys."""
    for pepper in (b"p", b"a-longer-pepper-" * 8):
        hasher = KeyHasher(pepper)
        for plain in (new_plain_key(), new_plain_key(), "sk-aig-x", ""):
            assert hasher(plain) == hash_key(pepper, plain)
    assert KeyHasher(b"one")("sk-aig-x") != KeyHasher(b"two")("sk-aig-x")
