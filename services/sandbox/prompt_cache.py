"""Anthropic's prompt caching and extended thinking, as the Messages simulator plays them.

Prompt caching: a request marks blocks with `cache_control: {"type": "ephemeral", "ttl":
"5m" | "1h"}` (tools, then system, then messages, in that order); everything up to and
including a marked block is a prefix the API may cache. A prefix shorter than the minimum
(1,024 tokens) is never cached. The longest prefix already cached is read
(`cache_read_input_tokens`); what the request's marked prefixes add beyond it is written
(`cache_creation_input_tokens`, broken down by lifetime in `cache_creation`), and the rest
is plain `input_tokens`. A read refreshes the entry's lifetime.

Extended thinking: with `thinking: {"type": "enabled", "budget_tokens": N}` (N >= 1,024 and
below `max_tokens`) the answer starts with a `thinking` block whose `signature` vouches for
its text; sent back in a later turn, a block whose signature does not match is refused, and
a final assistant turn that calls a tool must start with its thinking block. Both rules are
the API's, and they are what shows that a gateway passed the blocks through untouched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.synth import estimate_tokens, short_hash

MIN_CACHEABLE_TOKENS = 1024
MIN_THINKING_BUDGET = 1024
_LIFETIME_S = {"5m": 300.0, "1h": 3600.0}
_SIGNING_KEY = b"aig-sandbox-thinking"


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A cacheable prefix: its digest, its size in tokens and the lifetime asked for."""

    digest: str
    tokens: int
    ttl: str


@dataclass(slots=True)
class CacheUse:
    read: int = 0
    written_5m: int = 0
    written_1h: int = 0

    @property
    def written(self) -> int:
        return self.written_5m + self.written_1h


class CacheError(ValueError):
    pass


@dataclass(slots=True)
class PrefixReader:
    """Walks a request's blocks in the API's cache order, noting each marked prefix."""

    _hash: Any = field(default_factory=hashlib.sha256)
    _chars: int = 0
    breakpoints: list[Breakpoint] = field(default_factory=list)

    def add(self, block: Any, chars: int, where: str) -> None:
        stripped = block
        if isinstance(block, dict):
            stripped = {key: value for key, value in block.items() if key != "cache_control"}
        self._hash.update(repr(stripped).encode())
        self._chars += chars
        marker = block.get("cache_control") if isinstance(block, dict) else None
        if marker is None:
            return
        if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
            raise CacheError(f"{where}.cache_control.type: Input should be 'ephemeral'")
        ttl = marker.get("ttl", "5m")
        if ttl not in _LIFETIME_S:
            raise CacheError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
        tokens = estimate_tokens(self._chars)
        self.breakpoints.append(Breakpoint(self._hash.hexdigest(), tokens, ttl))


class PromptCache:
    """The account's cache entries: prefix digest -> when it expires."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def use(self, breakpoints: list[Breakpoint], prompt_tokens: int) -> CacheUse:
        now = time.monotonic()
        cacheable = [point for point in breakpoints if point.tokens >= MIN_CACHEABLE_TOKENS]
        use = CacheUse()
        for point in reversed(cacheable):
            if self._expiry.get(point.digest, 0.0) > now:
                use.read = min(point.tokens, prompt_tokens)
                break
        covered = use.read
        for point in cacheable:
            tokens = min(point.tokens, prompt_tokens)
            if tokens > covered:
                if point.ttl == "1h":
                    use.written_1h += tokens - covered
                else:
                    use.written_5m += tokens - covered
                covered = tokens
            self._expiry[point.digest] = max(
                self._expiry.get(point.digest, 0.0), now + _LIFETIME_S[point.ttl]
            )
        return use


def usage_fields(prompt_tokens: int, output_tokens: int, use: CacheUse) -> dict[str, Any]:
    return {
        "input_tokens": max(prompt_tokens - use.read - use.written, 0),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": use.written,
        "cache_read_input_tokens": use.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": use.written_5m,
            "ephemeral_1h_input_tokens": use.written_1h,
        },
    }


def thinking_budget(thinking: Any, max_tokens: int) -> int | None:
    """The budget asked for, None when thinking is off; CacheError-like ValueError if bad."""
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise ValueError("thinking: Input should be an object")
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return max_tokens
    if kind != "enabled":
        raise ValueError("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise ValueError("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_THINKING_BUDGET:
        raise ValueError(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if budget >= max_tokens:
        raise ValueError("`max_tokens` must be greater than `thinking.budget_tokens`")
    return budget


def thinking_text(last_user_text: str) -> str:
    return (
        f"The request ({short_hash(last_user_text)}) is plain; "
        "answer it directly and briefly, using a tool where one is offered."
    )


def signature(text: str) -> str:
    digest = hmac.new(_SIGNING_KEY, text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_thinking_block(block: dict[str, Any], where: str) -> None:
    text, given = block.get("thinking"), block.get("signature")
    if not isinstance(text, str) or not isinstance(given, str):
        raise ValueError(f"{where}: a thinking block needs `thinking` and `signature`")
    if not hmac.compare_digest(given, signature(text)):
        raise ValueError(f"{where}: Invalid `signature` in `thinking` block")
