"""A person's whole first hour, in Chromium: sign up, verify by mail, $10.00, a key, a call
with the OpenAI SDK, the call in the table and the chart, a cap that refuses the next call
with 402, $50 bought through Stripe Checkout (stripe-mock + a signed webhook) → +$54.00."""

from __future__ import annotations

import re
import sqlite3
import time

import httpx
import openai
import pytest
from browser_helpers import (
    balance,
    checkout_completed,
    mailed_link,
    new_address,
    shot,
    sign_in,
    sign_up,
    stripe_signature,
)
from playwright.sync_api import Page, Route, expect

from aig_common.money import parse_usd
from devstack.stack import Stack

MODEL = "gpt-4o-mini"


def latest_checkout(stack: Stack, address: str) -> str:
    """The Checkout session id Stripe would put in its event (stripe-mock keeps no state)."""
    database = stack.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT c.id FROM checkout_sessions c JOIN users u ON u.account_id = c.account_id"
            " WHERE u.email = ? ORDER BY c.created_at DESC LIMIT 1",
            (address,),
        ).fetchone()
    assert row, "no checkout session was recorded"
    return str(row[0])


def post_webhook(stack: Stack, payload: bytes, signature: str) -> httpx.Response:
    return httpx.post(
        f"{stack.edge_url}/dashboard/stripe/webhook",
        content=payload,
        headers={"stripe-signature": signature, "content-type": "application/json"},
    )


def test_sign_up_to_first_call_cap_and_purchase(page: Page, stack: Stack) -> None:
    address = new_address()
    page.goto(f"{stack.edge_url}/dashboard/signup")
    expect(page.get_by_text("$10.00 in credits")).to_be_visible()
    shot(page, "01-signup")
    sign_up(page, stack, address)
    expect(page.get_by_text(address)).to_be_visible()
    shot(page, "02-check-inbox")

    page.goto(mailed_link(stack, address, "verify"))
    expect(page.get_by_role("status")).to_contain_text("trial credits are in")
    shot(page, "03-verified")
    sign_in(page, stack, address)
    assert balance(page) == "$10.00"
    expect(page.get_by_text("Starter", exact=True)).to_be_visible()
    expect(page.get_by_text("more in 30 days → Growth, 30 % markup")).to_be_visible()
    shot(page, "04-overview")

    page.get_by_label("Name").fill("flow key")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("only time it is shown")).to_be_visible()
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("sk-aig-")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("button.copy")).not_to_have_text("Copy")
    shot(page, "05-new-key")

    client = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello from the dashboard test"}]
    )
    assert reply.choices[0].message.content

    # The call reaches the ledger through Kafka and billing: reload until the table has it.
    deadline = time.monotonic() + 60
    while True:
        page.goto(f"{stack.edge_url}/dashboard/usage?days=7")
        # The summaries are read before the table: wait until both include the call.
        if (
            page.locator("table.calls tbody tr.succeeded").count() == 1
            and page.locator("#period-calls").inner_text() == "1"
        ):
            break
        assert time.monotonic() < deadline, "the call never appeared on the usage page"
        time.sleep(0.5)
    row = page.locator("table.calls tbody tr").first
    expect(row).to_contain_text(MODEL)
    expect(row).to_contain_text("200 succeeded")
    expect(row).to_contain_text("flow key")
    expect(page.locator("#period-calls")).to_have_text("1")
    # One bar of the daily chart and the model chart's bar carry the call's spend.
    expect(page.locator("#chart-model ~ svg rect title")).to_contain_text(MODEL)
    assert page.locator("#chart-day ~ svg rect[height]:not([height='0.0'])").count() == 1
    csv = page.request.get(f"{stack.edge_url}/dashboard/usage.csv?days=7").text()
    assert csv.splitlines()[0].startswith("time,request_id") and MODEL in csv
    shot(page, "06-usage")

    # A daily cap of what the key has spent today: the next call cannot fit under it.
    page.goto(f"{stack.edge_url}/dashboard")
    key_row = page.locator("li.row", has_text="flow key")
    spent = re.search(r"Daily\s+no cap · \$([0-9.]+) spent", key_row.inner_text())
    assert spent, key_row.inner_text()
    caps = key_row.locator("form.caps-form")
    caps.get_by_label("Daily cap in USD for flow key").fill(spent.group(1))
    caps.get_by_role("button", name="Save caps").click()
    expect(page.get_by_role("status")).to_contain_text("Caps saved")
    expect(page.locator("li.row", has_text="flow key")).to_contain_text(f"${spent.group(1)} cap")
    shot(page, "07-cap-set")
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 402
    assert "key_daily_cap" in str(refused.value.body)

    page.goto(f"{stack.edge_url}/dashboard/credits")
    before = parse_usd(balance(page).lstrip("$"))
    # The edge answers with a redirect to Stripe's hosted page, which is not reachable
    # offline: the test reads the redirect and shows a stand-in page in its place.
    redirects: list[str] = []

    def stand_in_for_stripe(route: Route) -> None:
        answer = route.fetch(max_redirects=0)
        redirects.append(f"{answer.status} {answer.headers.get('location', '')}")
        route.fulfill(content_type="text/html", body="<h1>Stripe Checkout (stand-in)</h1>")

    page.route("**/dashboard/credits/checkout", stand_in_for_stripe)
    page.get_by_role("button", name="Buy $50 of credits").click()
    expect(page.get_by_role("heading", name="Stripe Checkout (stand-in)")).to_be_visible()
    assert redirects and redirects[0].startswith("303 https://checkout.stripe.com/")
    payload = checkout_completed(latest_checkout(stack, address))
    forged = post_webhook(stack, payload, stripe_signature(payload).replace("v1=", "v1=00"))
    assert forged.status_code == 400
    assert post_webhook(stack, payload, stripe_signature(payload)).json()["credited"] is True
    assert post_webhook(stack, payload, stripe_signature(payload)).json()["credited"] is False
    page.goto(f"{stack.edge_url}/dashboard/credits?notice=checkout_done")
    after = parse_usd(balance(page).lstrip("$"))
    assert after - before == parse_usd("54.00")
    expect(page.locator("table")).to_contain_text("purchase")
    expect(page.locator("table")).to_contain_text("$4.00")
    shot(page, "08-credits")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack.edge_url}/dashboard")
    shot(page, "09-phone-overview")
    page.goto(f"{stack.edge_url}/dashboard/usage?days=30")
    shot(page, "10-phone-usage")
