"""Admission: reserve a call's worst-case cost before the router sees it, or answer 402."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from aig_common.errors import APIError, model_not_found
from aig_common.money import usd
from catalog.estimate import (
    BYTES_PER_TOKEN,
    PromptSize,
    prompt_size,
    requested_max_output_tokens,
    worst_case_output_tokens,
)
from catalog.live import LiveCatalog
from catalog.models import Catalog, ChainLink, ChatModel, request_chain
from controldb import AuthenticatedKey, ratelimit
from controldb.money import Admission, LimitExceeded, Money, RateLimited

from .http import add_response_headers
from .metrics import (
    ADMITTED,
    ADMITTED_WHEN_ASKED_AGAIN,
    ASKED_AGAIN_WAIT,
    CLAMPED,
    REFUSED_WHEN_ASKED_AGAIN,
    count_refusal,
    note_model,
)
from .reservation_pool import USE_WITHIN_S, ReservationPool

log = logging.getLogger("aig.edge.admission")

_LIMIT_WORDS = {
    "key": "this API key's",
    "workspace": "this workspace's",
    "account": "this account's",
}


# A call refused for the room another edge holds ahead asks again this long after that
# edge must have given it back: time for the release's own transaction.
GIVE_BACK_GRACE_S = 0.1

# A clamped call is retried against the next limit that binds; there are at most seven
# (balance and key/workspace/account x daily/monthly).
_MAX_CLAMP_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class ChatAdmission:
    admission: Admission
    # Set when the client gave no output limit and the model's full worst case did not fit
    # the remaining caps or balance: the largest output the call may have, which the edge
    # sends upstream as max_completion_tokens so the reservation cannot be exceeded.
    clamped_output_tokens: int | None = None


def _affordable_note(affordable_tokens: int, floor: int) -> str:
    return (
        f" Without max_tokens the call can only afford {affordable_tokens} output tokens, "
        f"below the gateway's floor of {floor}."
    )


def payment_required(limit: LimitExceeded, note: str = "") -> APIError:
    """HTTP 402 naming the limit that was hit, the limit itself, and when it resets.
    Every 402 of admission is made here, so here it is counted."""
    count_refusal(limit.code)
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
        message + note,
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


def too_many_requests(limited: RateLimited) -> APIError:
    """HTTP 429 for a key over its rpm_limit, with OpenAI's rate-limit headers."""
    wait = ratelimit.retry_after_seconds(limited.retry_after_ms)
    return APIError(
        429,
        f"Rate limit reached for requests: this API key may make {limited.limit} requests per "
        f"minute. Please try again in {ratelimit.duration(limited.retry_after_ms)}.",
        code="rate_limit_exceeded",
        error_type="requests",
        headers={
            "retry-after": str(wait),
            **ratelimit.headers(limited.limit, 0, limited.reset_ms),
        },
    )


def note_rate(request: Request, admission: Admission) -> None:
    """An admitted call of a key with an rpm_limit answers with its x-ratelimit-* headers,
    whatever its outcome (the call counted)."""
    rate = admission.rate
    if rate is not None:
        add_response_headers(request, ratelimit.headers(rate.limit, rate.remaining, rate.reset_ms))


class Admissions:
    def __init__(
        self,
        catalog: LiveCatalog[Catalog],
        money: Money,
        min_clamped_output_tokens: int = 64,
        *,
        pool: ReservationPool | None = None,
    ) -> None:
        """With `pool`, a busy key's calls take reservations admitted ahead of them
        (edge/reservation_pool.py); without, every call admits on its own path."""
        self._catalog = catalog
        self._money = money
        self._min_clamped_output_tokens = min_clamped_output_tokens
        self._pool = pool

    def chat_model(self, model_id: str) -> ChatModel:
        return self._chat_model(model_id)[1]

    def _chat_model(self, model_id: str) -> tuple[Catalog, ChatModel]:
        catalog, model = self._catalog.find(lambda current: current.chat(model_id))
        if model is None:
            raise model_not_found(model_id)
        return catalog, model

    def provider_type(self, model: ChatModel) -> str:
        """The provider type (`openai`, `anthropic`...) of the instance serving `model`'s own
        route: which dialect the router can pass a client's request through in."""
        row = self._catalog.current.provider(model.provider)
        return row.type if row is not None else ""

    async def chat(self, key: AuthenticatedKey, body: dict[str, Any]) -> ChatAdmission:
        catalog, model = self._chat_model(body["model"])
        note_model(model.id)
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
        try:
            admitted = ChatAdmission(await self._reserve(key, worst, ahead=True))
        except LimitExceeded as limit:
            if requested_max_output_tokens(body) is not None:
                raise payment_required(limit) from None
            return await self._clamped(key, chain, size, worst, limit)
        ADMITTED.inc()
        return admitted

    async def _clamped(
        self,
        key: AuthenticatedKey,
        chain: list[ChainLink],
        size: PromptSize,
        worst: int,
        limit: LimitExceeded,
    ) -> ChatAdmission:
        """The client set no max_tokens and the model's maximum does not fit: admit the call
        with the most output the tightest limit leaves room for, as OpenRouter does, rather
        than refusing a call that would cost cents. Each round learns the binding limit's
        headroom from its LimitExceeded; the guarantee is unchanged, because the reserved
        worst case still covers everything the provider may produce."""
        ceiling = max(link.model.max_output_tokens for link in chain)
        for _ in range(_MAX_CLAMP_ROUNDS):
            headroom = limit.limit_nano_usd - limit.spent_nano_usd - limit.reserved_nano_usd
            # needed = worst marked up: scale the headroom back to upstream nano-USD.
            budget = max(0, headroom) * worst // max(1, limit.needed_nano_usd)
            tokens = _most_output_within(chain, size, budget, ceiling)
            if tokens < self._min_clamped_output_tokens:
                note = _affordable_note(tokens, self._min_clamped_output_tokens)
                raise payment_required(limit, note) from None
            worst = _worst_case(chain, size, tokens)
            ceiling = tokens
            try:
                admission = await self._reserve(key, worst)
            except LimitExceeded as tighter:
                limit = tighter
                continue
            CLAMPED.inc()
            return ChatAdmission(admission, clamped_output_tokens=tokens)
        raise payment_required(limit) from None

    async def embeddings(self, key: AuthenticatedKey, body: dict[str, Any]) -> Admission:
        _, model = self._catalog.find(lambda current: current.embedding(body["model"]))
        if model is None:
            raise model_not_found(body["model"])
        note_model(model.id)
        worst = model.worst_case_cost_nano_usd(_input_tokens(body["input"]))
        return await self._admit(key, worst, ahead=True)

    async def media(self, key: AuthenticatedKey, upstream_worst_case_nano_usd: int) -> Admission:
        """A media task's worst case: unit price x the units its input asks for. Never from
        the pool: a task holds its reservation for minutes, and tasks are not that alike."""
        return await self._admit(key, upstream_worst_case_nano_usd)

    async def release(self, admission: Admission) -> None:
        await self._money.release(admission.reservation_id)

    async def _admit(
        self, key: AuthenticatedKey, worst_case_nano_usd: int, *, ahead: bool = False
    ) -> Admission:
        try:
            admission = await self._reserve(key, worst_case_nano_usd, ahead=ahead)
        except LimitExceeded as limit:
            raise payment_required(limit) from None
        ADMITTED.inc()
        return admission

    async def _reserve(
        self, key: AuthenticatedKey, worst_case_nano_usd: int, *, ahead: bool = False
    ) -> Admission:
        """Money.admit, or with `ahead` a reservation the pool admitted before the call came;
        a key over its rpm_limit is a 429 (LimitExceeded is the caller's)."""
        pool = self._pool if ahead else None
        if pool is not None:
            admission = pool.take(key, worst_case_nano_usd)
            if admission is not None:
                pool.admitted(key, worst_case_nano_usd, admission)
                return admission
        try:
            try:
                admission = await self._money.admit(key.account_id, key.key_id, worst_case_nano_usd)
            except LimitExceeded:
                # Perhaps only for what is held ahead of calls that may never come.
                refused_at = time.monotonic()
                if pool is None or not await self._held_ahead_given_back(pool, key):
                    raise
                ASKED_AGAIN_WAIT.observe(time.monotonic() - refused_at)
                admission = await self._admit_asked_again(key, worst_case_nano_usd)
        except RateLimited as limited:
            raise too_many_requests(limited) from None
        if pool is not None:
            pool.admitted(key, worst_case_nano_usd, admission)
        return admission

    async def _admit_asked_again(
        self, key: AuthenticatedKey, worst_case_nano_usd: int
    ) -> Admission:
        """The one ask after a refusal, once what was held ahead is back; counted by its
        outcome (aig_edge_asked_again_total), so operators see what the wait bought."""
        try:
            admission = await self._money.admit(key.account_id, key.key_id, worst_case_nano_usd)
        except LimitExceeded:
            REFUSED_WHEN_ASKED_AGAIN.inc()
            raise
        ADMITTED_WHEN_ASKED_AGAIN.inc()
        return admission

    async def _held_ahead_given_back(self, pool: ReservationPool, key: AuthenticatedKey) -> bool:
        """After a refusal for money: gives back this process's shelves for the account, and
        waits until another process's (another edge's) must be back, as their rows'
        `shelved_until` says (at most USE_WITHIN_S away), and GIVE_BACK_GRACE_S more.
        True if asking again may now admit the call, False if nothing was held ahead.

        A row past its time is waited for too (the grace alone): its edge may be giving it
        back right now, the release racing the refusal. Rows a call took off a shelf stay
        until that call settles, so near a limit a refusal takes the grace longer, never
        more than USE_WITHIN_S and the grace."""
        gave_back = await pool.give_back_account(key.account_id)
        try:
            until = await self._money.shelved_until(key.account_id)
        except Exception as error:  # the database: refuse as if nothing else were shelved
            log.warning("reading what is held ahead failed: %s", type(error).__name__)
            return gave_back
        if until is None:
            return gave_back
        wait = (until - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(min(max(0.0, wait), USE_WITHIN_S) + GIVE_BACK_GRACE_S)
        return True


def _worst_case(chain: list[ChainLink], size: PromptSize, output_tokens: int) -> int:
    return max(
        link.model.worst_case_cost_nano_usd(
            size.tokens(link.model.image_input_tokens),
            min(output_tokens, link.model.max_output_tokens),
        )
        for link in chain
    )


def _most_output_within(
    chain: list[ChainLink], size: PromptSize, budget_nano_usd: int, ceiling: int
) -> int:
    """The largest output (0..ceiling) whose worst case over the chain fits the budget.
    Binary search, so any monotonic price shape (long-context tiers included) is exact."""
    low, high = 0, ceiling
    if _worst_case(chain, size, 0) > budget_nano_usd:
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if _worst_case(chain, size, middle) <= budget_nano_usd:
            low = middle
        else:
            high = middle - 1
    return low


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
