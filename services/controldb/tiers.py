"""The markup ladder: rolling 30-day billed spend of successful calls → tier and markup."""

from __future__ import annotations

from dataclasses import dataclass

from aig_common.money import NANO_PER_USD


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    min_spend_nano_usd: int
    markup_basis_points: int


TIERS: tuple[Tier, ...] = (
    Tier("starter", 0, 4000),
    Tier("growth", 50 * NANO_PER_USD, 3000),
    Tier("scale", 200 * NANO_PER_USD, 2200),
    Tier("enterprise", 1_000 * NANO_PER_USD, 1500),
    Tier("strategic", 5_000 * NANO_PER_USD, 1000),
)


def tier_for(rolling_spend_nano_usd: int) -> Tier:
    chosen = TIERS[0]
    for tier in TIERS:
        if rolling_spend_nano_usd >= tier.min_spend_nano_usd:
            chosen = tier
    return chosen
