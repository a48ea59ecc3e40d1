"""Token usage of one call, as the provider counted it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    # Prompt tokens written to the provider's prompt cache (part of prompt_tokens), for
    # 5-minute and 1-hour entries: priced at the model's cache-write prices, not its input's.
    cache_write_prompt_tokens: int = 0
    cache_write_1h_prompt_tokens: int = 0

    def as_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
