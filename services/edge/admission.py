"""Admission: reserve a call's worst-case cost before the router sees it, or answer 402."""

from __future__ import annotations

from typing import Any

from aig_common.errors import APIError, model_not_found
from aig_common.money import usd
from catalog.estimate import BYTES_PER_TOKEN, prompt_size, worst_case_output_tokens
from catalog.live import LiveCatalog
from catalog.models import Catalog, request_chain
from controldb import AuthenticatedKey
from controldb.money import Admission, LimitExceeded, Money

_LIMIT_WORDS = {
    "key": "this API key's",
    "workspace": "this workspace's",
    "account": "this account's",
}


def payment_required(limit: LimitExceeded) -> APIError:
    """HTTP 402 naming the limit that was hit, the limit itself, and when it resets."""
    if limit.code == "insufficient_credits":
        message = (
            f"Insufficient credits: this call may cost up to ${usd(limit.needed_nano_usd)} and "
            f"the balance available is ${usd(limit.limit_nano_usd - limit.reserved_nano_usd)}. "
            "Top up the account's credits (POST /admin/v1/accounts/{id}/credits) to continue."
        )
        source, reason = "account", "balance"
        hint = "Add credits to the account, or lower max_tokens."
    else:
        source, period, _ = limit.code.split("_")
        message = (
            f"Spend cap reached: {_LIMIT_WORDS[source]} {period} cap of "
            f"${usd(limit.limit_nano_usd)} would be exceeded (spent ${usd(limit.spent_nano_usd)}, "
            f"in flight ${usd(limit.reserved_nano_usd)}, this call up to "
            f"${usd(limit.needed_nano_usd)}). It resets at {limit.resets_at:%Y-%m-%dT%H:%M:%SZ}."
        )
        reason = f"{period}_cap"
        hint = "Wait for the reset, raise the cap, or lower max_tokens."
    return APIError(
        402,
        message,
        code=limit.code,
        error_type="insufficient_quota",
        extra={
            "metadata": {
                "limit_source": source,
                "reason": reason,
                "limit_usd": usd(limit.limit_nano_usd),
                "spent_usd": usd(limit.spent_nano_usd),
                "reserved_usd": usd(limit.reserved_nano_usd),
                "requested_usd": usd(limit.needed_nano_usd),
                "resets_at": (
                    limit.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ") if limit.resets_at else None
                ),
                "remedy_hint": hint,
            }
        },
    )


class Admissions:
    def __init__(self, catalog: LiveCatalog[Catalog], money: Money) -> None:
        self._catalog = catalog
        self._money = money

    async def chat(self, key: AuthenticatedKey, body: dict[str, Any]) -> Admission:
        catalog = self._catalog.current
        model = catalog.chat(body["model"])
        if model is None:
            raise model_not_found(body["model"])
        # The router tries the same chain (Catalog.chain), skipping members that cannot
        # serve the request; a failover may land on any of them: hold the dearest.
        chain = request_chain(catalog, model, body)
        size = prompt_size(body)  # once: the chain only differs in how it prices images
        worst = max(
            link.model.worst_case_cost_nano_usd(
                size.tokens(link.model.image_input_tokens),
                worst_case_output_tokens(body, link.model),
            )
            for link in chain
        )
        return await self._admit(key, worst)

    async def embeddings(self, key: AuthenticatedKey, body: dict[str, Any]) -> Admission:
        model = self._catalog.current.embedding(body["model"])
        if model is None:
            raise model_not_found(body["model"])
        return await self._admit(key, model.worst_case_cost_nano_usd(_input_tokens(body["input"])))

    async def release(self, admission: Admission) -> None:
        await self._money.release(admission.reservation_id)

    async def _admit(self, key: AuthenticatedKey, worst_case_nano_usd: int) -> Admission:
        try:
            return await self._money.admit(key.account_id, key.key_id, worst_case_nano_usd)
        except LimitExceeded as limit:
            raise payment_required(limit) from None


def _input_tokens(value: Any) -> int:
    """Over-estimates the tokens of an embeddings input (text or token-id arrays)."""
    items = value if isinstance(value, list) else [value]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += -(-len(item.encode()) // BYTES_PER_TOKEN) + 1
        elif isinstance(item, list):
            total += len(item)
        else:
            total += 1
    return total
