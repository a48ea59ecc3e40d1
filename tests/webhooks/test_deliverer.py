"""The delivery loop against a real receiver on 127.0.0.1 and a real SQLite control DB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker

from aig_common.callback_urls import ALLOW_HOSTS_ENV
from controldb import KeyStore, create_engine_from_url, migrate
from controldb.webhooks import DELIVERED, NewDelivery, SecretView, WebhookStore
from webhooks.deliver import Deliverer
from webhooks.settings import WebhooksSettings

PEPPER = b"test-pepper-not-secret"


class SecretFailsOnce(WebhookStore):
    """The first lookup of a secret fails as a locked or unreachable database would."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lookups = 0

    async def secret(self, account_id: str) -> SecretView:
        self.lookups += 1
        if self.lookups == 1:
            raise ConnectionError("the control database did not answer")
        return await super().secret(account_id)


def _settings(lease_s: float) -> WebhooksSettings:
    return WebhooksSettings(
        host="127.0.0.1",
        port=0,
        kafka_bootstrap_servers="",
        database_url="",
        retry_schedule_s=(5.0,),
        jitter=0.0,
        max_retry_after_s=60.0,
        timeout_s=5.0,
        lease_s=lease_s,
        concurrency=4,
        poll_interval_s=0.2,
        drain_s=5.0,
    )


async def test_an_attempt_that_failed_before_sending_is_retried_long_before_its_lease_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append(request.headers["webhook-id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv(ALLOW_HOSTS_ENV, "127.0.0.1")

    url = f"sqlite+aiosqlite:///{tmp_path}/control.db"
    await migrate(url)
    engine = create_engine_from_url(url)
    account = await KeyStore(engine, PEPPER).create_account("hooked")
    store = SecretFailsOnce(async_sessionmaker(engine, expire_on_commit=False))
    callback = f"http://127.0.0.1:{port}/hook"
    await store.add_deliveries([NewDelivery("task-1", "evt", account.id, callback, b"{}")])
    # A lease far longer than the wait below: only the hand-back can make the retry in time.
    deliverer = Deliverer(store, _settings(lease_s=300.0))
    loop = asyncio.create_task(deliverer.run())
    try:
        async with asyncio.timeout(30):
            (view,) = await store.deliveries_of_task("task-1")
            while view.state != DELIVERED:
                await asyncio.sleep(0.05)
                (view,) = await store.deliveries_of_task("task-1")
    finally:
        deliverer.stop()
        await loop
        await runner.cleanup()
        await engine.dispose()
    # One POST, one recorded attempt: the failed preparation sent nothing and counts nothing.
    assert posts == [view.id]
    assert store.lookups == 2
    assert (view.attempts, [a.status for a in view.attempt_log]) == (1, [204])
