"""What the browser tests do as a person would: sign up, read the mail, sign in, and what
they do as Stripe would: sign a webhook."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.sync_api import Page

from devstack.stack import Stack

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
WEBHOOK_SECRET = "whsec_browser_tests_not_secret"
PASSWORD = "a long and private passphrase"


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
