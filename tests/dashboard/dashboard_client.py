"""A person's browser (cookies, forms with their CSRF token) and the mail they receive,
for the in-process dashboard tests."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx

from devstack.mailsink import Inbox

WEBHOOK_SECRET = "whsec_test_dashboard_not_secret"


class Mailbox:
    def __init__(self, inbox: Inbox, port: int) -> None:
        self.inbox = inbox
        self.port = port

    def to(self, address: str) -> list[dict[str, Any]]:
        return [m for m in self.inbox.messages if address in m["to"]]

    def link(self, address: str, path: str) -> str:
        """The newest link to `path` mailed to `address`, relative to the edge."""
        for message in self.to(address):
            found = re.search(rf"https?://[^/\s]+(/dashboard/{path}\?token=\S+)", message["text"])
            if found:
                return found.group(1)
        raise AssertionError(f"no {path} link mailed to {address}")


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """One person's browser: its own cookies, and forms sent with the page's CSRF token."""

    def __init__(self, app: Any) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        )

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def submit(
        self, page: str, action: str, fields: dict[str, str], *, csrf: str | None = None
    ) -> httpx.Response:
        """Opens `page`, then posts `fields` to `action` with the token the page carries."""
        shown = await self.http.get(page)
        token = CSRF.search(shown.text)
        assert token, f"no form token on {page}: {shown.status_code}"
        return await self.http.post(
            action, data={"csrf": csrf if csrf is not None else token.group(1), **fields}
        )

    async def sign_up(self, email: str, password: str = "correct horse battery") -> httpx.Response:
        return await self.submit("/dashboard/signup", "/dashboard/signup", {
            "email": email, "password": password,
        })  # fmt: skip

    async def log_in(self, email: str, password: str = "correct horse battery") -> httpx.Response:
        return await self.submit("/dashboard/login", "/dashboard/login", {
            "email": email, "password": password,
        })  # fmt: skip

    async def aclose(self) -> None:
        await self.http.aclose()


async def verified(browser: Browser, mailbox: Mailbox) -> str:
    """Signs up a fresh address, signs in and follows the verification mail; its email."""
    email = f"buyer.{secrets.token_hex(4)}@example.com"
    await browser.sign_up(email)
    await browser.log_in(email)
    await browser.get(mailbox.link(email, "verify"))
    return email
