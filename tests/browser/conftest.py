"""The whole gateway as processes (Kafka, sandbox, router, billing, edge, the SMTP sink) plus
stripe-mock, and Debian's Chromium driven by Playwright: what a person at a browser sees."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_helpers import WEBHOOK_SECRET
from playwright.sync_api import Browser, Page, sync_playwright

from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret
from devstack.stripe_mock import StripeMock

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: Playwright's sync API holds an event loop on this thread
    # while it runs, and the async tests collected after these need the thread back.
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
