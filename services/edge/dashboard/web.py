"""What every dashboard handler shares: the signed-in viewer, CSRF, forms, rendering."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from aig_common.money import percent, usd
from controldb.people import People, SignedIn

from .charts import dollars
from .security import Signer
from .settings import DashboardSettings

SESSION_COOKIE = "aig_session"
# Binds the CSRF token of forms shown before sign-in (sign-up, login, reset).
PRE_SESSION_COOKIE = "aig_pre"
MAX_FORM_BYTES = 16 * 1024
PREFIX = "/dashboard"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Stripe's hosted checkout is the one place a form here may lead to besides ourselves.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self' https://checkout.stripe.com"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Verification and reset links carry their token in the URL: never in a Referer.
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

# Messages shown after a redirect, chosen by a fixed code so no text is reflected from a URL.
NOTICES = {
    "verified": "Your email address is verified.",
    "trial_granted": "Your email address is verified and your trial credits are in.",
    "trial_used": "Your email address is verified. This address already received its trial.",
    "caps_saved": "Caps saved. The next call is checked against them.",
    "rate_saved": "Rate limit saved. The next call is checked against it.",
    "key_revoked": "Key revoked. Calls with it now get 401.",
    "workspace_created": "Workspace created.",
    "password_changed": "Password changed. Every browser was signed out; sign in again.",
    "signed_out": "Signed out.",
    "signed_out_everywhere": "Signed out on every device.",
    "verification_sent": "We sent a new verification link.",
    "checkout_done": "Payment received. Credits appear as soon as Stripe confirms it.",
    "checkout_cancelled": "Checkout cancelled; nothing was charged.",
    "refunded": "Refund issued to your card.",
}


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def not_found() -> PageError:
    # The same answer for "does not exist" and "is someone else's": ids leak nothing.
    return PageError(404, "Not found", "There is nothing here, or it is not yours.")


@dataclass
class Web:
    settings: DashboardSettings
    people: People
    signer: Signer

    def __post_init__(self) -> None:
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["usd"] = lambda nano: "$" + usd(int(nano))
        self.templates.filters["dollars"] = lambda nano: dollars(int(nano))
        self.templates.filters["percent"] = lambda bp: percent(int(bp)) + " %"

    def route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        """A dashboard page at PREFIX + path whose PageErrors render as HTML."""
        return Route(f"{PREFIX}{path}", page_errors(self, handler), methods=methods)

    async def viewer(self, request: Request) -> SignedIn | None:
        token = request.cookies.get(SESSION_COOKIE, "")
        return await self.people.signed_in(token) if token else None

    async def require_viewer(self, request: Request) -> SignedIn:
        viewer = await self.viewer(request)
        if viewer is None:
            raise PageError(401, "Please sign in", "Your session has ended; sign in again.")
        return viewer

    def csrf_binding(self, request: Request) -> str:
        return request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRE_SESSION_COOKIE, "")

    async def form(self, request: Request) -> dict[str, str]:
        """The urlencoded form, after its CSRF token was checked."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PageError(413, "Too large", "That form is larger than any form here.")
        fields = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if not self.signer.csrf_ok(self.csrf_binding(request), fields.get("csrf", "")):
            raise PageError(
                403,
                "Form expired",
                "This form was not sent from your open dashboard page. Reload it and retry.",
            )
        return fields

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        **context: Any,
    ) -> Response:
        binding = self.csrf_binding(request)
        fresh_binding = None
        if not binding:
            fresh_binding = binding = secrets.token_urlsafe(24)
        notice = NOTICES.get(request.query_params.get("notice", ""))
        html = self.templates.get_template(template).render(
            csrf=self.signer.csrf_token(binding),
            notice=notice,
            prefix=PREFIX,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if fresh_binding:
            self.set_cookie(response, PRE_SESSION_COOKIE, fresh_binding, max_age=None)
        return response

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            httponly=True,
            secure=self.settings.secure_cookies,
            # Lax: the cookie rides along when a person follows a link from a mail, but not
            # on another site's form posts (those also fail the CSRF check).
            samesite="lax",
        )

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path=PREFIX, httponly=True, secure=self.settings.secure_cookies
        )


def redirect(path: str, notice: str | None = None) -> Response:
    target = f"{PREFIX}{path}" + (f"?notice={notice}" if notice else "")
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Handler = Callable[[Request], Awaitable[Response]]


def page_errors(web: Web, handler: Handler) -> Handler:
    """Errors of a page become an HTML page with the right status (not the API's JSON)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except PageError as error:
            if error.status == 401:
                return redirect("/login")
            viewer = await web.viewer(request)
            return web.render(
                request,
                "message.html",
                status=error.status,
                viewer=viewer,
                title=error.title,
                message=error.message,
            )

    return run
