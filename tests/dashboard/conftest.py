"""The dashboard in process (httpx over ASGI) against a real SMTP sink and stripe-mock."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from dashboard_client import WEBHOOK_SECRET, Browser, Mailbox

from devstack.mailsink import Inbox
from devstack.processes import free_port
from devstack.stripe_mock import StripeMock
from edge.app import create_app
from edge.settings import EdgeSettings


@pytest.fixture(scope="session")
def stripe_mock() -> Iterator[str]:
    """Stripe's own API test server, built from the Go module proxy by the repo's script."""
    server = StripeMock()
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
async def mailbox() -> AsyncIterator[Mailbox]:
    # Not under pytest's basetemp: concurrent pytest runs of the same user prune old ones.
    directory = tempfile.TemporaryDirectory(prefix="aig-mail-")
    inbox = Inbox(Path(directory.name))
    port = free_port()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(inbox), "127.0.0.1", port)
    yield Mailbox(inbox, port)
    server.close()
    directory.cleanup()


@pytest.fixture(scope="session")
async def edge(mailbox: Mailbox, stripe_mock: str) -> AsyncIterator[Any]:
    directory = tempfile.TemporaryDirectory(prefix="aig-dashboard-")
    var = Path(directory.name)
    env = {
        "AIG_ADMIN_TOKEN": "admin-test",
        "AIG_KEY_PEPPER": "pepper-test",
        "AIG_RESULT_URL_SECRET": "result-url-secret-for-the-dashboard-tests",
        "AIG_DATABASE_URL": f"sqlite+aiosqlite:///{var / 'aig.db'}",
        "AIG_SMTP_URL": f"smtp://127.0.0.1:{mailbox.port}",
        "AIG_PUBLIC_URL": "http://127.0.0.1",
        "AIG_STRIPE_SECRET_KEY": "sk_test_dashboard",
        "AIG_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "AIG_STRIPE_API_BASE": stripe_mock,
        # Billing is not running: pages that need the ledger are tested in tests/browser.
        "AIG_BILLING_URL": f"http://127.0.0.1:{free_port()}",
    }
    async with contextlib.AsyncExitStack() as running:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            app = create_app(EdgeSettings.from_env())
            app.state.database_url = env["AIG_DATABASE_URL"]
            await running.enter_async_context(app.router.lifespan_context(app))
        # The app has read its settings: the environment is restored before the tests run,
        # or every service a later test module starts would inherit this edge's
        # AIG_PUBLIC_URL (media result links to a closed port) and its Stripe settings.
        yield app
    directory.cleanup()


@pytest.fixture
async def browser(edge: Any) -> AsyncIterator[Browser]:
    person = Browser(edge)
    yield person
    await person.aclose()


@pytest.fixture
async def other_browser(edge: Any) -> AsyncIterator[Browser]:
    person = Browser(edge)
    yield person
    await person.aclose()
