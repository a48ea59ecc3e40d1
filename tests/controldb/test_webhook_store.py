"""Webhook delivery state on SQLite and PostgreSQL: one delivery per task, claims that never
overlap between replicas, fenced results, and the rotation overlap."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from controldb import KeyStore, create_engine_from_url, migrate
from controldb.keystore import AccountNotFound
from controldb.models import WebhookSecret
from controldb.webhooks import (
    DELIVERED,
    PENDING,
    RETRY,
    AttemptResult,
    NewDelivery,
    WebhookStore,
)

LEASE = timedelta(seconds=60)
PEPPER = b"test-pepper-not-secret"


@pytest.fixture
async def webhooks(migrated_url: str) -> AsyncIterator[WebhookStore]:
    engine = create_engine_from_url(migrated_url)
    yield WebhookStore(async_sessionmaker(engine, expire_on_commit=False))
    await engine.dispose()


def _delivery(task_id: str, event_id: str = "evt") -> NewDelivery:
    return NewDelivery(task_id, event_id, "acct", "https://example.com/cb", b'{"code":200}')


async def test_a_task_gets_one_delivery_however_often_its_event_comes(
    webhooks: WebhookStore,
) -> None:
    assert await webhooks.add_deliveries([_delivery("t1", "e1"), _delivery("t1", "e1")]) == 1
    assert await webhooks.add_deliveries([_delivery("t1", "e2"), _delivery("t2")]) == 1
    assert [d.task_id for d in await webhooks.deliveries_of_task("t1")] == ["t1"]
    assert await webhooks.deliveries_of_task("t1", account_id="another") == []


async def test_concurrent_claims_take_disjoint_rows_and_stale_leases_are_fenced(
    webhooks: WebhookStore,
) -> None:
    await webhooks.add_deliveries([_delivery(f"task-{n}") for n in range(40)])
    now = datetime.now(UTC) + timedelta(seconds=1)
    batches = await asyncio.gather(*(webhooks.claim_due(now, 15, LEASE) for _ in range(4)))
    claimed = [delivery.id for batch in batches for delivery in batch]
    assert len(claimed) == len(set(claimed)) == 40
    assert await webhooks.claim_due(now, 15, LEASE) == []

    # The lease ran out: another replica takes the row over, and the first one's late
    # result is refused instead of overwriting the second one's.
    # Any claimer's row: with SKIP LOCKED one of the four may have found every row taken.
    first = next(batch[0] for batch in batches if batch)
    later = now + LEASE + timedelta(seconds=1)
    (second,) = [d for d in await webhooks.claim_due(later, 40, LEASE) if d.id == first.id]
    done = AttemptResult(later, 5, 200, None, DELIVERED)
    assert not await webhooks.finish_attempt(first, done)
    assert await webhooks.finish_attempt(second, done)
    (view,) = await webhooks.deliveries_of_task(first.task_id)
    assert (view.state, view.attempts, [a.status for a in view.attempt_log]) == (
        DELIVERED,
        1,
        [200],
    )


async def test_a_retry_is_due_at_its_time_and_not_before(webhooks: WebhookStore) -> None:
    await webhooks.add_deliveries([_delivery("t-retry")])
    now = datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = await webhooks.claim_due(now, 10, LEASE)
    retry_at = now + timedelta(minutes=5)
    failed = AttemptResult(now, 3, 500, "HTTP 500", RETRY, retry_at)
    assert await webhooks.finish_attempt(claimed, failed)
    assert await webhooks.claim_due(retry_at - timedelta(seconds=1), 10, LEASE) == []
    (again,) = await webhooks.claim_due(retry_at, 10, LEASE)
    assert (again.id, again.attempts, again.schedule_index) == (claimed.id, 1, 1)
    (view,) = await webhooks.deliveries_of_task("t-retry")
    assert view.state == PENDING


async def test_a_row_handed_back_is_due_again_then_without_an_attempt(
    webhooks: WebhookStore,
) -> None:
    await webhooks.add_deliveries([_delivery("t-back")])
    now = datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = await webhooks.claim_due(now, 10, LEASE)
    due_at = now + timedelta(seconds=5)
    assert await webhooks.hand_back(claimed, due_at)
    assert await webhooks.claim_due(due_at - timedelta(seconds=1), 10, LEASE) == []
    (again,) = await webhooks.claim_due(due_at + timedelta(seconds=1), 10, LEASE)
    assert (again.id, again.attempts, again.schedule_index) == (claimed.id, 0, 0)
    # The first claimer's lease is gone: its hand-back must not shorten the new one.
    assert not await webhooks.hand_back(claimed, due_at)
    assert await webhooks.claim_due(due_at + timedelta(seconds=2), 10, LEASE) == []
    (view,) = await webhooks.deliveries_of_task("t-back")
    assert (view.state, view.attempt_log) == (PENDING, ())


async def test_rotation_signs_with_both_secrets_for_the_overlap_only(
    webhooks: WebhookStore, store: KeyStore
) -> None:
    account = await store.create_account("rotating")
    first = await webhooks.secret(account.id)
    assert first.secret.startswith("whsec_") and await webhooks.secret(account.id) == first
    rotated = await webhooks.rotate_secret(account.id, overlap=timedelta(hours=24))
    now = datetime.now(UTC)
    assert rotated.signing_secrets(now) == (rotated.secret, first.secret)
    assert rotated.signing_secrets(now + timedelta(hours=25)) == (rotated.secret,)


async def test_intake_makes_each_account_secret_once_and_skips_unknown_accounts(
    migrated_url: str, store: KeyStore
) -> None:
    engine = create_engine_from_url(migrated_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    webhooks = WebhookStore(sessions)
    account = await store.create_account("hooked")
    items = [
        NewDelivery("task-1", "evt", account.id, "https://example.com/cb", b"{}"),
        NewDelivery("task-2", "evt", "acct_gone", "https://example.com/cb", b"{}"),
    ]
    assert await webhooks.add_deliveries(items) == 2
    async with sessions() as session:
        stored = await session.get(WebhookSecret, account.id)
        assert stored is not None and await session.get(WebhookSecret, "acct_gone") is None
    made = await webhooks.secret(account.id)
    assert made.secret == stored.secret
    # A later intake for the same account keeps the secret its deliveries are signed with.
    more = [NewDelivery("task-3", "evt", account.id, "https://example.com/cb", b"{}")]
    assert await webhooks.add_deliveries(more) == 1
    assert await webhooks.secret(account.id) == made
    with pytest.raises(AccountNotFound):
        await webhooks.secret("acct_gone")
    await engine.dispose()


async def test_a_made_secret_is_read_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    """On SQLite every write queues for one lock; under load a lookup that took it waited
    past the busy timeout, failed the attempt, and the delivery waited out its lease."""
    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    engine = create_engine_from_url(url)
    try:
        account = await KeyStore(engine, PEPPER).create_account("busy")
        webhooks = WebhookStore(async_sessionmaker(engine, expire_on_commit=False))
        made = await webhooks.secret(account.id)
        writer = sqlite3.connect(tmp_path / "control.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # held for the whole lookup
        try:
            assert await webhooks.secret(account.id) == made
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    finally:
        await engine.dispose()
