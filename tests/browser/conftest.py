"""The whole gateway as processes (Kafka, sandbox, router, billing, edge, the SMTP sink) plus
stripe-mock, and Debian's Chromium driven by Playwright: what a person at a browser sees."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret
from devstack.stripe_mock import StripeMock

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
WEBHOOK_SECRET = "whsec_browser_tests_not_secret"
PASSWORD = "a long and private passphrase"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing but this machine resolves: a page can never reach the internet from a test.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stripe = StripeMock()
    stripe_url = stripe.start()
    # Outside pytest's basetemp, which concurrent pytest runs of the same user prune.
    directory = tempfile.TemporaryDirectory(prefix="aig-browser-")
    var_dir = Path(directory.name)
    ports = StackPorts.free()
    running = Stack(
        var_dir=var_dir,
        ports=ports,
        admin_token=new_secret("aig-admin-"),
        key_pepper=new_secret(""),
        database_url=f"sqlite+aiosqlite:///{var_dir / 'aig.db'}",
        env={
            **{key: "" for key in PROVIDER_KEYS},
            "AIG_PUBLIC_URL": f"http://127.0.0.1:{ports.edge}",
            "AIG_STRIPE_SECRET_KEY": "sk_test_browser",
            "AIG_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "AIG_STRIPE_API_BASE": stripe_url,
            "AIG_BILLING_BATCH_WAIT_MS": "50",
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        stripe.stop()
        directory.cleanup()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def other_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def new_address(domain: str = "example.com") -> str:
    return f"pat.{secrets.token_hex(4)}@{domain}"


def mailed_link(stack: Stack, address: str, path: str, timeout_s: float = 20) -> str:
    """The newest link to /dashboard/<path> in the mail the SMTP sink holds for `address`."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = httpx.get(f"{stack.mail_url}/messages", params={"to": address}).json()["data"]
        for message in messages:
            found = re.search(rf"(http://\S+/dashboard/{path}\?token=\S+)", message["text"])
            if found:
                return found.group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} mail for {address}: {messages}")
        time.sleep(0.2)


def sign_up(page: Page, stack: Stack, address: str) -> None:
    page.goto(f"{stack.edge_url}/dashboard/signup")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()


def sign_in(page: Page, stack: Stack, address: str) -> None:
    page.goto(f"{stack.edge_url}/dashboard/login")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview").wait_for()


def balance(page: Page) -> str:
    return page.locator("#balance").inner_text().strip()


def stripe_signature(payload: bytes) -> str:
    """The Stripe-Signature header Stripe would send, under the test webhook secret."""
    timestamp = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def checkout_completed(checkout_id: str) -> bytes:
    event: dict[str, Any] = {
        "id": f"evt_{secrets.token_hex(8)}",
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
    return orjson.dumps(event)
