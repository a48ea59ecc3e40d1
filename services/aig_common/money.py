"""Money: integer nano-USD inside the system, exact decimal USD strings at the HTTP surface."""

from __future__ import annotations

import re

NANO_PER_USD = 1_000_000_000
# Every stored amount is a signed 64-bit integer (BIGINT, Int64): about $9.2 billion.
MAX_NANO_USD = 2**63 - 1
BASIS_POINTS = 10_000


def apply_markup(upstream_nano_usd: int, markup_basis_points: int) -> int:
    """Upstream cost times (1 + markup), rounded up to the next nano-USD."""
    return -(-upstream_nano_usd * (BASIS_POINTS + markup_basis_points) // BASIS_POINTS)


def usd(nano_usd: int) -> str:
    """Exact decimal USD: 1_500_000_000 → "1.50", 123 → "0.000000123"."""
    sign = "-" if nano_usd < 0 else ""
    whole, fraction = divmod(abs(nano_usd), NANO_PER_USD)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


_USD_AMOUNT = re.compile(r"^-?\d{1,12}(\.\d{1,9})?$")


def parse_usd(text: object) -> int:
    """ "50.00" (or 50) → 50_000_000_000: plain decimals only, at most 9 places, no floats."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError('an amount in USD must be a decimal string such as "50.00"')
    literal = str(text).strip()
    if not _USD_AMOUNT.match(literal):
        raise ValueError(f"{text!r} is not a decimal USD amount with at most 9 decimal places")
    whole, _, fraction = literal.lstrip("-").partition(".")
    nano = int(whole) * NANO_PER_USD + int(fraction.ljust(9, "0") or "0")
    return -nano if literal.startswith("-") else nano


def percent(basis_points: int) -> str:
    """4000 → "40", 2250 → "22.5"."""
    whole, rest = divmod(basis_points, 100)
    return f"{whole}" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0")
