"""The tier job: rolling 30-day billed spend of successful calls, from the ledger."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from controldb.money import Money

from .ledger import Ledger

log = logging.getLogger("billing.tiers")
ROLLING_WINDOW = timedelta(days=30)


async def recompute_tiers(
    ledger: Ledger, money: Money, *, now: datetime | None = None
) -> dict[str, object]:
    """`now` is a test seam (a recompute as of another moment); production passes none."""
    now = datetime.now(UTC) if now is None else now
    spend = await ledger.rolling_spend_nano_usd(since=now - ROLLING_WINDOW)
    applied = await money.apply_tiers(spend, now)
    return {
        "object": "tier_recompute",
        "accounts": len(applied),
        "computed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tiers": {account_id: tier.name for account_id, tier in applied.items()},
    }


async def run_periodically(ledger: Ledger, money: Money, interval_s: float) -> None:
    while True:
        try:
            await recompute_tiers(ledger, money)
        except Exception:
            log.exception("tier recompute failed; retrying at the next interval")
        await asyncio.sleep(interval_s)
