"""The dashboard's configuration, read from the environment in one place."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from aig_common.money import parse_usd

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    # Where people reach the edge: the links in mails and Stripe's return URLs start here.
    public_url: str
    smtp_url: str
    mail_from: str
    # Signs mailed links and CSRF tokens.
    secret: bytes
    trial_nano_usd: int
    stripe_secret_key: str
    stripe_webhook_secret: str
    # Set only to point the Stripe client at stripe-mock (tests, `make up` offline).
    stripe_api_base: str

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies everywhere but a local address, where browsers talk plain HTTP."""
        return urlsplit(self.public_url).hostname not in LOCAL_HOSTS

    @property
    def payments_enabled(self) -> bool:
        return bool(self.stripe_secret_key and self.stripe_webhook_secret)

    @classmethod
    def from_env(
        cls, key_pepper: bytes, host: str, port: int, env: dict[str, str] | None = None
    ) -> DashboardSettings:
        env = dict(os.environ) if env is None else env
        secret = env.get("AIG_DASHBOARD_SECRET", "").encode() or hmac.digest(
            # Derived from the key pepper when unset, so no further secret is required.
            key_pepper,
            b"aig dashboard links and forms",
            hashlib.sha256,
        )
        return cls(
            public_url=env.get("AIG_PUBLIC_URL", f"http://{host}:{port}").rstrip("/"),
            smtp_url=env.get("AIG_SMTP_URL", "smtp://127.0.0.1:2525"),
            mail_from=env.get("AIG_MAIL_FROM", "aig <no-reply@aig.localhost>"),
            secret=secret,
            trial_nano_usd=parse_usd(env.get("AIG_TRIAL_USD", "10.00")),
            stripe_secret_key=env.get("AIG_STRIPE_SECRET_KEY", ""),
            stripe_webhook_secret=env.get("AIG_STRIPE_WEBHOOK_SECRET", ""),
            stripe_api_base=env.get("AIG_STRIPE_API_BASE", ""),
        )
