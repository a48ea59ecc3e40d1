"""Sign-up, email verification and the trial, sign-in, sign-out and password reset.

Enumeration-safe: sign-up and reset answer the same whether or not the address has an
account (the owner learns the difference from the mail), and a failed sign-in says only
that the address or password is wrong, after the same argon2 work either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aig_common.money import usd

from .mail import Mailer
from .security import (
    RateLimiter,
    check_password,
    fingerprint,
    hash_password,
    password_problem,
)
from .web import PREFIX, SESSION_COOKIE, PageError, Web, client_ip, redirect

SESSION_LIFETIME = timedelta(days=14)
VERIFY_LINK_LIFETIME_S = 24 * 3600
RESET_LINK_LIFETIME_S = 3600
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def _too_many() -> PageError:
    return PageError(
        429, "Too many attempts", "Too many attempts from here. Wait a few minutes and retry."
    )


@dataclass
class Limiters:
    signup_ip: RateLimiter
    signup_email: RateLimiter
    login_ip: RateLimiter
    login_email: RateLimiter
    reset_ip: RateLimiter
    reset_email: RateLimiter
    resend_user: RateLimiter

    @classmethod
    def default(cls) -> Limiters:
        return cls(
            signup_ip=RateLimiter(20, 3600),
            signup_email=RateLimiter(3, 3600),
            login_ip=RateLimiter(30, 600),
            login_email=RateLimiter(10, 600),
            reset_ip=RateLimiter(10, 3600),
            reset_email=RateLimiter(3, 3600),
            resend_user=RateLimiter(3, 3600),
        )


class Onboarding:
    def __init__(self, web: Web, mailer: Mailer, limiters: Limiters | None = None) -> None:
        self._web = web
        self._people = web.people
        self._signer = web.signer
        self._settings = web.settings
        self._mailer = mailer
        self._limits = limiters or Limiters.default()

    def routes(self) -> list[Route]:
        route = self._web.route
        return [
            route("/signup", self.signup_form, ["GET"]),
            route("/signup", self.signup, ["POST"]),
            route("/verify", self.verify, ["GET"]),
            route("/verify/resend", self.resend, ["POST"]),
            route("/login", self.login_form, ["GET"]),
            route("/login", self.login, ["POST"]),
            route("/logout", self.logout, ["POST"]),
            route("/logout-everywhere", self.logout_everywhere, ["POST"]),
            route("/reset", self.reset_form, ["GET"]),
            route("/reset", self.reset, ["POST"]),
            route("/reset/confirm", self.reset_confirm_form, ["GET"]),
            route("/reset/confirm", self.reset_confirm, ["POST"]),
        ]

    # -- sign-up and verification --------------------------------------------------------

    async def signup_form(self, request: Request) -> Response:
        return self._web.render(
            request, "signup.html", trial=usd(self._settings.trial_nano_usd), email=""
        )

    async def signup(self, request: Request) -> Response:
        form = await self._web.form(request)
        email = form.get("email", "").strip().lower()
        password = form.get("password", "")
        problem = None if EMAIL.match(email) else "Enter an email address like you@example.com."
        problem = problem or password_problem(password, email)
        if problem:
            return self._web.render(
                request,
                "signup.html",
                status=400,
                trial=usd(self._settings.trial_nano_usd),
                email=email,
                error=problem,
            )
        if not (
            self._limits.signup_ip.allow(client_ip(request))
            and self._limits.signup_email.allow(email)
        ):
            raise _too_many()
        user = await self._people.sign_up(email, await hash_password(password))
        if user is None:
            await self._mailer.send(
                email,
                "Someone tried to sign up to aig with your address",
                "Someone (perhaps you) tried to create an aig account with this address, "
                "which already has one. Nothing changed.\n\n"
                f"Sign in: {self._settings.public_url}{PREFIX}/login\n"
                f"Forgot your password? {self._settings.public_url}{PREFIX}/reset\n",
            )
        else:
            await self._send_verification(user.id, email)
        return self._web.render(request, "check_inbox.html", email=email)

    async def _send_verification(self, user_id: str, email: str) -> None:
        token = self._signer.sign("verify", {"u": user_id, "m": email}, VERIFY_LINK_LIFETIME_S)
        await self._mailer.send(
            email,
            "Verify your email for aig",
            "Welcome to aig.\n\n"
            f"Verify your address to unlock ${usd(self._settings.trial_nano_usd)} in credits "
            "and create API keys:\n\n"
            f"{self._settings.public_url}{PREFIX}/verify?token={token}\n\n"
            "The link works for 24 hours. If you did not sign up, ignore this mail.\n",
        )

    async def verify(self, request: Request) -> Response:
        fields = self._signer.unsign("verify", request.query_params.get("token", ""))
        user = await self._people.get(fields["u"]) if fields else None
        if user is None or fields is None or user.email != fields.get("m"):
            raise PageError(
                400,
                "Link not valid",
                "This verification link is broken or has expired. Sign in to send a new one.",
            )
        already = user.verified_at is not None
        await self._people.verify(user.id)
        granted = await self._people.grant_trial(user, self._settings.trial_nano_usd)
        notice = "trial_granted" if granted else ("verified" if already else "trial_used")
        if await self._web.viewer(request) is not None:
            return redirect("", notice)
        return redirect("/login", notice)

    async def resend(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        await self._web.form(request)
        if viewer.user.verified_at is None:
            if not self._limits.resend_user.allow(viewer.user.id):
                raise _too_many()
            await self._send_verification(viewer.user.id, viewer.user.email)
        return redirect("", "verification_sent")

    # -- sessions ------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self._web.viewer(request) is not None:
            return redirect("")
        return self._web.render(request, "login.html", email="")

    async def login(self, request: Request) -> Response:
        form = await self._web.form(request)
        email = form.get("email", "").strip().lower()
        if not (
            self._limits.login_ip.allow(client_ip(request))
            and self._limits.login_email.allow(email)
        ):
            raise _too_many()
        user = await self._people.by_email(email)
        ok = await check_password(user.password_hash if user else None, form.get("password", ""))
        if user is None or not ok:
            return self._web.render(
                request,
                "login.html",
                status=401,
                email=email,
                error="That email address or password is not right.",
            )
        token = await self._people.open_session(user.id, SESSION_LIFETIME)
        response = redirect("")
        self._web.set_cookie(
            response, SESSION_COOKIE, token, max_age=int(SESSION_LIFETIME.total_seconds())
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self._web.form(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            await self._people.close_session(token)
        response = redirect("/login", "signed_out")
        self._web.clear_session(response)
        return response

    async def logout_everywhere(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        await self._web.form(request)
        await self._people.close_all_sessions(viewer.user.id)
        response = redirect("/login", "signed_out_everywhere")
        self._web.clear_session(response)
        return response

    # -- password reset ------------------------------------------------------------------

    async def reset_form(self, request: Request) -> Response:
        return self._web.render(request, "reset.html", sent=False)

    async def reset(self, request: Request) -> Response:
        form = await self._web.form(request)
        email = form.get("email", "").strip().lower()
        if not (
            self._limits.reset_ip.allow(client_ip(request))
            and self._limits.reset_email.allow(email)
        ):
            raise _too_many()
        user = await self._people.by_email(email)
        if user is not None:
            token = self._signer.sign(
                "reset",
                {"u": user.id, "f": fingerprint(user.password_hash)},
                RESET_LINK_LIFETIME_S,
            )
            await self._mailer.send(
                email,
                "Reset your aig password",
                "Someone (perhaps you) asked to reset the password of your aig account.\n\n"
                f"{self._settings.public_url}{PREFIX}/reset/confirm?token={token}\n\n"
                "The link works once, for one hour. If you did not ask, ignore this mail.\n",
            )
        return self._web.render(request, "reset.html", sent=True, email=email)

    async def _reset_user_id(self, token: str) -> str:
        fields = self._signer.unsign("reset", token)
        user = await self._people.get(fields["u"]) if fields else None
        if user is None or fields is None or fields.get("f") != fingerprint(user.password_hash):
            raise PageError(
                400,
                "Link not valid",
                "This reset link was used already, is broken, or has expired. Ask for a new one.",
            )
        return user.id

    async def reset_confirm_form(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        await self._reset_user_id(token)
        return self._web.render(request, "reset_confirm.html", token=token)

    async def reset_confirm(self, request: Request) -> Response:
        form = await self._web.form(request)
        token = form.get("token", "")
        user_id = await self._reset_user_id(token)
        user = await self._people.get(user_id)
        assert user is not None
        problem = password_problem(form.get("password", ""), user.email)
        if problem:
            return self._web.render(
                request, "reset_confirm.html", status=400, token=token, error=problem
            )
        await self._people.set_password(user_id, await hash_password(form["password"]))
        response = redirect("/login", "password_changed")
        self._web.clear_session(response)
        return response
