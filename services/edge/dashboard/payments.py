"""Buying credits with Stripe Checkout, and refunds of what was bought.

The account is credited only by a `checkout.session.completed` webhook whose signature the
`stripe` library verified, for a session we opened (the amount and account come from our
own record of it), once: the session row is marked completed in the same transaction as
the credit, so a replayed or duplicated event credits nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stripe

from aig_common.money import NANO_PER_USD
from controldb.models import CheckoutSession
from controldb.money import PACKAGE_BONUS_BASIS_POINTS, CreditResult
from controldb.people import People

log = logging.getLogger("edge.dashboard.payments")
NANO_PER_CENT = NANO_PER_USD // 100
# The packages on sale are exactly those that carry a bonus.
PACKAGES = tuple(sorted(PACKAGE_BONUS_BASIS_POINTS))


class PaymentError(Exception):
    """Stripe could not be reached or refused the request; the message is safe to show."""


class WebhookRejected(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Checkout:
    session_id: str
    url: str


class Payments:
    def __init__(
        self,
        people: People,
        secret_key: str,
        webhook_secret: str,
        api_base: str = "",
    ) -> None:
        self._people = people
        self._webhook_secret = webhook_secret
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=stripe.HTTPXClient(),
            max_network_retries=2,
        )

    async def start_checkout(
        self, account_id: str, email: str, amount_nano_usd: int, return_url: str
    ) -> Checkout:
        if amount_nano_usd not in PACKAGES:
            raise PaymentError("Choose one of the credit packages.")
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params={
                    "mode": "payment",
                    "customer_email": email,
                    "client_reference_id": account_id,
                    "metadata": {"account_id": account_id},
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": "usd",
                                "unit_amount": amount_nano_usd // NANO_PER_CENT,
                                "product_data": {
                                    "name": f"aig credits ${amount_nano_usd // NANO_PER_USD}"
                                },
                            },
                        }
                    ],
                    "success_url": f"{return_url}?notice=checkout_done",
                    "cancel_url": f"{return_url}?notice=checkout_cancelled",
                }
            )
        except stripe.StripeError as exc:
            log.warning("Stripe checkout failed: %s", type(exc).__name__)
            raise PaymentError("The payment provider is unavailable; nothing was charged.") from exc
        if not session.url:
            raise PaymentError("The payment provider returned no checkout page.")
        await self._people.record_checkout(session.id, account_id, amount_nano_usd)
        return Checkout(session.id, session.url)

    async def handle_webhook(self, payload: bytes, signature: str) -> CreditResult | None:
        """Verifies and applies one webhook; the credit if it added one, else None.
        Raises WebhookRejected for a payload whose signature does not verify."""
        try:
            event = self._client.construct_event(payload, signature, self._webhook_secret)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            raise WebhookRejected(type(exc).__name__) from exc
        if event.type != "checkout.session.completed":
            return None
        session = event.data.object.to_dict()
        if session.get("payment_status") != "paid":
            return None
        return await self._people.complete_checkout(
            str(session.get("id", "")), event.id, _text_or_none(session.get("payment_intent"))
        )

    async def refund(self, checkouts: list[CheckoutSession], amount_nano_usd: int) -> None:
        """Refunds `amount` through Stripe against the newest completed purchases first."""
        remaining = amount_nano_usd
        for checkout in checkouts:
            if remaining <= 0:
                break
            if checkout.completed_at is None or not checkout.payment_intent:
                continue
            part = min(remaining, checkout.amount_nano_usd)
            cents = -(-part // NANO_PER_CENT)
            try:
                await self._client.v1.refunds.create_async(
                    params={"payment_intent": checkout.payment_intent, "amount": cents}
                )
            except stripe.StripeError as exc:
                log.warning("Stripe refund failed: %s", type(exc).__name__)
                raise PaymentError("The payment provider refused the refund.") from exc
            remaining -= part
        if remaining > 0:
            raise PaymentError("No card payment is left to refund that amount to.")


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
