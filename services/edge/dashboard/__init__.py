"""The customer's web side, served by the edge under /dashboard: sign-up with email
verification and the trial, sign-in, keys and caps, spend charts and calls, media tasks
with their webhook deliveries, credits.

Server-rendered HTML (Jinja2, autoescaped), a few lines of JS for the copy button, charts as
server-drawn SVG; no framework, no build step, nothing loaded from another site.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from controldb import KeyStore
from controldb.limits import Limits
from controldb.money import Money
from controldb.people import People
from controldb.tasks import TaskStore
from controldb.webhooks import WebhookStore

from ..billing_client import BillingClient
from .mail import Mailer
from .onboarding import Onboarding
from .pages import Pages
from .payments import Payments
from .security import Signer
from .settings import DashboardSettings
from .web import PREFIX, Web

STATIC = Path(__file__).resolve().parent / "static"

__all__ = ["DashboardSettings", "dashboard_routes"]


def dashboard_routes(
    settings: DashboardSettings,
    sessions: async_sessionmaker[AsyncSession],
    store: KeyStore,
    money: Money,
    limits: Limits,
    billing: BillingClient,
    tier_interval: timedelta,
) -> list[BaseRoute]:
    people = People(sessions, money)
    web = Web(settings, people, Signer(settings.secret))
    payments = (
        Payments(
            people,
            settings.stripe_secret_key,
            settings.stripe_webhook_secret,
            settings.stripe_api_base,
        )
        if settings.payments_enabled
        else None
    )
    onboarding = Onboarding(web, Mailer(settings.smtp_url, settings.mail_from))
    pages = Pages(
        web,
        store,
        money,
        limits,
        billing,
        tier_interval,
        payments,
        TaskStore(sessions),
        WebhookStore(sessions),
    )
    return [
        Mount(f"{PREFIX}/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
        *onboarding.routes(),
        *pages.routes(),
    ]
