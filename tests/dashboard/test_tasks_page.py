"""The dashboard's media tasks: each task with its state and cost, and its webhook deliveries
with every attempt; never another customer's."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard_client import Browser, Mailbox, verified
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from controldb import create_engine_from_url
from controldb.models import Task, User
from controldb.tasks import TaskStore, new_task_id
from controldb.webhooks import AttemptResult, NewDelivery, WebhookStore


def _task(account_id: str, state: str, **values: Any) -> Task:
    now = int(time.time() * 1000)
    return Task(
        id=new_task_id(),
        account_id=account_id,
        key_id="key_dashboard",
        model="flux-kontext-pro",
        state=state,
        param="{}",
        units=2,
        unit_price_nano_usd=40_000_000,
        markup_basis_points=4000,
        reservation_id=f"res_{secrets.token_hex(6)}",
        reserved_nano_usd=112_000_000,
        create_time_ms=now,
        update_time_ms=now,
        deadline_ms=now + 600_000,
        **values,
    )


async def test_tasks_show_state_cost_and_every_delivery_attempt(
    edge: Any, browser: Browser, other_browser: Browser, mailbox: Mailbox
) -> None:
    email = await verified(browser, mailbox)
    await verified(other_browser, mailbox)
    engine = create_engine_from_url(edge.state.database_url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session:
            account_id = await session.scalar(select(User.account_id).where(User.email == email))
        assert account_id
        tasks, webhooks = TaskStore(sessions), WebhookStore(sessions)
        expiry = datetime.now(UTC) + timedelta(hours=1)
        done = await tasks.create(
            _task(
                account_id,
                "success",
                billed_nano_usd=112_000_001,
                callback_url="https://hooks.example.com/aig",
            ),
            expiry,
        )
        running = await tasks.create(_task(account_id, "generating"), expiry)
        await webhooks.add_deliveries(
            [NewDelivery(done.id, "evt_dashboard", account_id, done.callback_url or "", b"{}")]
        )
        # Two attempts: a 500 to retry, then the 200 that delivers it.
        for status, outcome in ((500, "retry"), (200, "delivered")):
            (claimed,) = await webhooks.claim_due(
                datetime.now(UTC) + timedelta(days=1), 10, timedelta(seconds=60)
            )
            await webhooks.finish_attempt(
                claimed,
                AttemptResult(
                    started_at=datetime.now(UTC),
                    duration_ms=12,
                    status=status,
                    error=None,
                    outcome=outcome,
                    next_attempt_at=datetime.now(UTC),
                ),
            )
    finally:
        await engine.dispose()

    page = (await browser.get("/dashboard/tasks")).text
    finished = page.split(f'id="{done.id}"', 1)[1].split("</tr>", 1)[0]
    assert "success" in finished and "$0.112000001" in finished
    assert "delivered, 2 attempts, last 200" in finished
    assert finished.count("<li>") == 2 and "500 retry" in finished and "200 delivered" in finished
    ongoing = page.split(f'id="{running.id}"', 1)[1].split("</tr>", 1)[0]
    # A task still rendering shows what is held for it, and no callback.
    assert "generating" in ongoing and "$0.112" in ongoing and "held" in ongoing
    assert "none" in ongoing

    theirs = (await other_browser.get("/dashboard/tasks")).text
    assert done.id not in theirs and running.id not in theirs
    assert "No tasks yet" in theirs
