"""What every provider type is given to build a chat request: the route chain's member."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from catalog.models import ChatModel, Route

# Anthropic requires max_tokens; when the client sets none we ask for at most this many, so a
# default call is neither truncated early nor reserved at a model's 64k-token worst case.
DEFAULT_MAX_OUTPUT_TOKENS = 8192


@dataclass(frozen=True, slots=True)
class Target:
    """One member of a call's route chain: where to send it and which catalog model it bills."""

    route: Route
    model: ChatModel
    # The model id the client asked for, which every answer carries.
    public_id: str

    @property
    def provider(self) -> str:
        return self.route.provider

    @property
    def upstream_id(self) -> str:
        return self.route.upstream_id

    @property
    def max_output_tokens(self) -> int:
        return min(self.model.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS)


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))
