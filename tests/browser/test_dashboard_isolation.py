"""Two people at two browsers: the trial is once per inbox, and neither sees or touches the
other's keys, calls or charts."""

from __future__ import annotations

import re
import time

import httpx
import openai
from browser_helpers import balance, mailed_link, new_address, shot, sign_in, sign_up
from playwright.sync_api import Page, expect

from devstack.stack import Stack


def verified_customer(page: Page, stack: Stack, address: str) -> None:
    sign_up(page, stack, address)
    page.goto(mailed_link(stack, address, "verify"))
    sign_in(page, stack, address)


def test_the_trial_is_once_per_inbox(page: Page, other_page: Page, stack: Stack) -> None:
    address = new_address("gmail.com")
    verified_customer(page, stack, address)
    assert balance(page) == "$10.00"

    # The same address again: the same answer as for a new one, and no new account.
    sign_up(other_page, stack, address.upper())
    local, _, domain = address.partition("@")
    alias = f"{local.replace('.', '')}+again@{domain}"
    sign_up(other_page, stack, alias)
    other_page.goto(mailed_link(stack, alias, "verify"))
    expect(other_page.get_by_role("status")).to_contain_text("already received its trial")
    sign_in(other_page, stack, alias)
    assert balance(other_page) == "$0.00"
    shot(other_page, "11-no-second-trial")


def test_another_customers_key_calls_and_charts_stay_hidden(
    page: Page, other_page: Page, stack: Stack
) -> None:
    owner, stranger = new_address(), new_address()
    verified_customer(page, stack, owner)
    page.get_by_label("Name").fill("owner key")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    key_id = re.search(r"/dashboard/keys/(key_\w+)/revoke", page.content())
    assert key_id
    client = openai.OpenAI(base_url=f"{stack.edge_url}/v1", api_key=secret, max_retries=0)
    client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "private"}]
    )
    deadline = time.monotonic() + 60
    while True:
        page.goto(f"{stack.edge_url}/dashboard/usage?days=7")
        if "claude-sonnet-4-5" in page.locator("table.calls").inner_text():
            break
        assert time.monotonic() < deadline, "the owner's call never reached the usage page"
        time.sleep(0.5)

    verified_customer(other_page, stack, stranger)
    other_page.goto(f"{stack.edge_url}/dashboard/usage?days=90&key_id={key_id.group(1)}")
    expect(other_page.locator("table.calls")).to_contain_text("No calls in this period")
    expect(other_page.locator("#chart-model ~ svg")).to_contain_text("No spend in this period")
    assert "claude-sonnet-4-5" not in other_page.content()
    assert "owner key" not in other_page.content()
    csv = other_page.request.get(
        f"{stack.edge_url}/dashboard/usage.csv?days=90&key_id={key_id.group(1)}"
    ).text()
    assert csv.strip().count("\n") == 0, csv
    shot(other_page, "12-stranger-usage")

    other_page.goto(f"{stack.edge_url}/dashboard")
    token = other_page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    for action in ("revoke", "caps"):
        reply = other_page.request.post(
            f"{stack.edge_url}/dashboard/keys/{key_id.group(1)}/{action}",
            form={"csrf": token, "daily_cap_usd": "0"},
        )
        assert reply.status == 404, action
    # The stranger's revoke changed nothing: the key still works for its owner.
    assert (
        httpx.get(
            f"{stack.edge_url}/v1/models", headers={"authorization": f"Bearer {secret}"}
        ).status_code
        == 200
    )
