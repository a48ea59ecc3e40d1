"""Sign-up, verification and the once-per-inbox trial, sessions, CSRF, reset, rate limits."""

from __future__ import annotations

import secrets

import pytest
from dashboard_client import Browser, Mailbox

from controldb.people import normalized_address
from edge.dashboard.charts import dollars
from edge.dashboard.security import RateLimiter, Signer, password_problem


def fresh(domain: str = "example.com") -> str:
    return f"person.{secrets.token_hex(4)}@{domain}"


def test_addresses_normalise_to_the_inbox_they_reach() -> None:
    assert normalized_address(" Ada.Lovelace+aig@GMail.com ") == "adalovelace@gmail.com"
    assert normalized_address("ada.lovelace@googlemail.com") == "adalovelace@gmail.com"
    # Dots matter to most providers; plus-tags are dropped everywhere.
    assert normalized_address("Ada.Lovelace+x@Example.org") == "ada.lovelace@example.org"


def test_password_policy() -> None:
    assert password_problem("short", "a@b.co") is not None
    assert password_problem("password123", "a@b.co") is not None
    assert password_problem("aaaaaaaaaaaa", "a@b.co") is not None
    assert password_problem("ada.lovelace", "ada.lovelace@b.co") is not None
    assert password_problem("correct horse battery", "a@b.co") is None


def test_signed_links_resist_forgery_reuse_and_age() -> None:
    now = [1_000_000.0]
    signer = Signer(b"k", clock=lambda: now[0])
    token = signer.sign("verify", {"u": "usr_1"}, 60)
    assert signer.unsign("verify", token) == {"u": "usr_1"}
    assert signer.unsign("reset", token) is None
    body, _, mac = token.partition(".")
    assert signer.unsign("verify", body + "." + mac[:-2] + "AA") is None
    assert Signer(b"other", clock=lambda: now[0]).unsign("verify", token) is None
    now[0] += 61
    assert signer.unsign("verify", token) is None


def test_chart_money_never_rounds_a_real_spend_to_zero() -> None:
    assert dollars(35_280) == "$0.000035"
    assert dollars(0) == "$0.00"
    assert dollars(123_456_789_000) == "$123.46"


def test_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    now[0] = 10.5
    assert limiter.allow("a")


async def _balance(browser: Browser) -> str:
    page = await browser.get("/dashboard")
    marker = 'id="balance">'
    return page.text.split(marker, 1)[1].split("<", 1)[0]


async def test_verification_grants_the_trial_once_per_inbox(
    browser: Browser, other_browser: Browser, mailbox: Mailbox
) -> None:
    email = fresh("gmail.com")
    page = await browser.sign_up(email)
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert (await browser.log_in(email)).status_code == 303
    assert await _balance(browser) == "$0.00"
    unverified = await browser.submit("/dashboard", "/dashboard/keys", {"name": "too early"})
    assert unverified.status_code == 403 and "Verify your email first" in unverified.text

    verified = await browser.get(mailbox.link(email, "verify"))
    assert verified.status_code == 303 and "notice=trial_granted" in verified.headers["location"]
    assert await _balance(browser) == "$10.00"
    again = await browser.get(mailbox.link(email, "verify"))
    assert "notice=verified" in again.headers["location"]
    assert await _balance(browser) == "$10.00"

    # The same address again: the same answer as a new one, no second account, a warning mail.
    repeat = await other_browser.sign_up(email.upper())
    assert repeat.status_code == 200 and "Check your inbox" in repeat.text
    assert "already has one" in mailbox.to(email)[0]["text"]

    # The same inbox by another spelling: an account, but no second trial.
    local, _, domain = email.partition("@")
    alias = f"{local.replace('.', '')}+second@{domain}"
    await other_browser.sign_up(alias)
    assert (await other_browser.log_in(alias)).status_code == 303
    reply = await other_browser.get(mailbox.link(alias, "verify"))
    assert "notice=trial_used" in reply.headers["location"]
    assert await _balance(other_browser) == "$0.00"


async def test_sign_in_failures_do_not_tell_which_part_was_wrong(
    browser: Browser, mailbox: Mailbox
) -> None:
    email = fresh()
    await browser.sign_up(email)
    wrong_password = await browser.log_in(email, "not the password at all")
    unknown_user = await browser.log_in(fresh(), "not the password at all")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert "email address or password is not right" in wrong_password.text
    assert "email address or password is not right" in unknown_user.text


async def test_forms_need_their_csrf_token(browser: Browser) -> None:
    email = fresh()
    refused = await browser.submit(
        "/dashboard/signup", "/dashboard/signup", {"email": email, "password": "x" * 12},
        csrf="forged",
    )  # fmt: skip
    assert refused.status_code == 403 and "Form expired" in refused.text


async def test_session_cookie_flags(browser: Browser) -> None:
    email = fresh()
    await browser.sign_up(email)
    reply = await browser.log_in(email)
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/dashboard" in cookie
    # The test edge's public URL is 127.0.0.1: plain HTTP, so no Secure flag here.
    assert "secure" not in cookie


async def test_reset_link_works_once_and_signs_out_everywhere(
    browser: Browser, other_browser: Browser, mailbox: Mailbox
) -> None:
    email = fresh()
    await browser.sign_up(email)
    await browser.log_in(email)
    asked = await other_browser.submit("/dashboard/reset", "/dashboard/reset", {"email": email})
    nobody = await other_browser.submit("/dashboard/reset", "/dashboard/reset", {"email": fresh()})
    assert "If an account uses" in asked.text and "If an account uses" in nobody.text
    link = mailbox.link(email, "reset/confirm")
    changed = await other_browser.submit(link, "/dashboard/reset/confirm", {
        "token": link.split("token=")[1], "password": "a brand new secret",
    })  # fmt: skip
    assert changed.status_code == 303 and "password_changed" in changed.headers["location"]
    # The old browser's session is gone; the link does not work twice; the new password does.
    assert (await browser.get("/dashboard")).headers["location"] == "/dashboard/login"
    assert (await other_browser.get(link)).status_code == 400
    assert (await other_browser.log_in(email, "a brand new secret")).status_code == 303


async def test_logout_everywhere(browser: Browser, other_browser: Browser) -> None:
    email = fresh()
    await browser.sign_up(email)
    await browser.log_in(email)
    await other_browser.log_in(email)
    out = await browser.submit("/dashboard", "/dashboard/logout-everywhere", {})
    assert out.status_code == 303
    assert (await other_browser.get("/dashboard")).status_code == 303


async def test_reset_mails_are_rate_limited_per_address(browser: Browser) -> None:
    email = fresh()
    statuses = [
        (await browser.submit("/dashboard/reset", "/dashboard/reset", {"email": email})).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/usage", "/dashboard/credits"])
async def test_pages_need_a_session(browser: Browser, path: str) -> None:
    reply = await browser.get(path)
    assert reply.status_code == 303 and reply.headers["location"] == "/dashboard/login"
