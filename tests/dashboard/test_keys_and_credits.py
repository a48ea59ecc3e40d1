"""Keys and caps behind a verified sign-in, Stripe purchases (stripe-mock + signed webhooks),
refunds, and one customer never reaching another's objects."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import httpx
import orjson
from dashboard_client import WEBHOOK_SECRET, Browser, Mailbox, verified
from sqlalchemy import select

from controldb import create_engine_from_url
from controldb.models import CheckoutSession


def balance(page: str) -> str:
    return page.split('id="balance">', 1)[1].split("<", 1)[0]


def signed(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header, made as Stripe makes it."""
    timestamp = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def completed(checkout_id: str, event_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "object": "event",
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    "id": checkout_id,
                    "object": "checkout.session",
                    "payment_status": "paid",
                    "payment_intent": f"pi_{secrets.token_hex(8)}",
                }
            },
        }
    )


async def last_checkout(edge: Any) -> str:
    engine = create_engine_from_url(edge.state.database_url)
    async with engine.connect() as connection:
        found = await connection.scalar(
            select(CheckoutSession.id).order_by(CheckoutSession.created_at.desc()).limit(1)
        )
    await engine.dispose()
    assert found
    return str(found)


async def webhook(browser: Browser, payload: bytes, signature: str) -> httpx.Response:
    return await browser.http.post(
        "/dashboard/stripe/webhook", content=payload, headers={"stripe-signature": signature}
    )


async def test_key_created_once_shown_with_caps_and_revoked(
    browser: Browser, mailbox: Mailbox
) -> None:
    await verified(browser, mailbox)
    created = await browser.submit(
        "/dashboard", "/dashboard/keys", {"name": "prod", "daily_cap_usd": "2.50"}
    )
    assert created.status_code == 200 and "only time it is shown" in created.text
    secret = re.search(r"sk-aig-[0-9A-Za-z]{43}", created.text)
    assert secret and created.headers["cache-control"] == "no-store"
    page = (await browser.get("/dashboard")).text
    assert secret.group(0) not in page and "$2.50 cap" in page
    key_id = re.search(r'action="/dashboard/keys/(key_[^/]+)/revoke"', page)
    assert key_id
    revoked = await browser.submit("/dashboard", f"/dashboard/keys/{key_id.group(1)}/revoke", {})
    assert "notice=key_revoked" in revoked.headers["location"]
    assert "1 revoked key" in (await browser.get("/dashboard")).text


async def test_a_key_gets_a_request_rate_limit_at_creation_and_later(
    browser: Browser, mailbox: Mailbox
) -> None:
    await verified(browser, mailbox)
    await browser.submit("/dashboard", "/dashboard/keys", {"name": "loop", "rpm_limit": "30"})
    page = (await browser.get("/dashboard")).text
    assert "at most 30 requests/min" in page
    key_id = re.search(r'action="/dashboard/keys/(key_[^/]+)/rate"', page)
    assert key_id
    rate = f"/dashboard/keys/{key_id.group(1)}/rate"
    refused = await browser.submit("/dashboard", rate, {"rpm_limit": "0"})
    assert refused.status_code == 400 and "whole number of requests per minute" in refused.text
    saved = await browser.submit("/dashboard", rate, {"rpm_limit": "120"})
    assert "notice=rate_saved" in saved.headers["location"]
    assert "at most 120 requests/min" in (await browser.get("/dashboard")).text
    await browser.submit("/dashboard", rate, {"rpm_limit": ""})
    assert "requests/min</span>" not in (await browser.get("/dashboard")).text


async def test_another_customers_keys_and_workspaces_are_out_of_reach(
    browser: Browser, other_browser: Browser, mailbox: Mailbox
) -> None:
    await verified(browser, mailbox)
    await verified(other_browser, mailbox)
    await browser.submit("/dashboard", "/dashboard/keys", {"name": "mine"})
    team = f"skunkworks-{secrets.token_hex(3)}"
    await browser.submit("/dashboard", "/dashboard/workspaces", {"name": team})
    page = (await browser.get("/dashboard")).text
    key_id = re.search(r"/dashboard/keys/(key_[^/]+)/revoke", page)
    ws_id = re.search(r"/dashboard/workspaces/(ws_[^/]+)/caps", page)
    assert key_id and ws_id
    for action in (
        f"/dashboard/keys/{key_id.group(1)}/revoke",
        f"/dashboard/keys/{key_id.group(1)}/caps",
        f"/dashboard/keys/{key_id.group(1)}/rate",
        f"/dashboard/workspaces/{ws_id.group(1)}/caps",
    ):
        reply = await other_browser.submit(
            "/dashboard", action, {"daily_cap_usd": "0", "rpm_limit": "1"}
        )
        assert reply.status_code == 404, action
    # A key in someone else's workspace cannot be made either.
    stolen = await other_browser.submit(
        "/dashboard", "/dashboard/keys", {"name": "x", "workspace_id": ws_id.group(1)}
    )
    assert stolen.status_code == 404
    assert team not in (await other_browser.get("/dashboard")).text
    assert "no cap" in (await browser.get("/dashboard")).text


async def test_a_signed_checkout_webhook_credits_once(
    edge: Any, browser: Browser, mailbox: Mailbox
) -> None:
    await verified(browser, mailbox)
    started = await browser.submit("/dashboard/credits", "/dashboard/credits/checkout", {
        "package": "50",
    })  # fmt: skip
    assert started.status_code == 303
    assert started.headers["location"].startswith("https://checkout.stripe.com/")
    checkout_id = await last_checkout(edge)
    payload = completed(checkout_id)

    forged = await webhook(browser, payload, signed(payload, secret="whsec_wrong"))
    stale = await webhook(browser, payload, signed(payload, at=int(time.time()) - 3600))
    assert forged.status_code == stale.status_code == 400
    assert balance((await browser.get("/dashboard/credits")).text) == "$10.00"

    assert (await webhook(browser, payload, signed(payload))).json()["credited"] is True
    assert balance((await browser.get("/dashboard/credits")).text) == "$64.00"
    replay = await webhook(browser, payload, signed(payload))
    other_event = completed(checkout_id)
    duplicate = await webhook(browser, other_event, signed(other_event))
    assert replay.json()["credited"] is duplicate.json()["credited"] is False
    credits = (await browser.get("/dashboard/credits")).text
    assert balance(credits) == "$64.00" and "4.00" in credits

    # A refund above what was bought is refused by the admin API's rule; within it, paid back.
    too_much = await browser.submit("/dashboard/credits", "/dashboard/credits/refund", {
        "amount_usd": "60.00",
    })  # fmt: skip
    assert too_much.status_code == 400 and "at most $50.00" in too_much.text
    refunded = await browser.submit("/dashboard/credits", "/dashboard/credits/refund", {
        "amount_usd": "20.00",
    })  # fmt: skip
    assert "notice=refunded" in refunded.headers["location"]
    assert balance((await browser.get("/dashboard/credits")).text) == "$44.00"
