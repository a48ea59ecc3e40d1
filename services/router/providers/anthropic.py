"""Anthropic's Messages API (`/v1/messages`), translated from and to OpenAI's format."""

from __future__ import annotations

from typing import Any

import orjson

from ..adapters import anthropic
from .base import ChatCall, ProviderInstance, ProviderType, TranslatedRequest, UpstreamRequest

API_VERSION = "2023-06-01"


class AnthropicRequest(TranslatedRequest):
    error_from_response = staticmethod(anthropic.error_from_response)
    completion_from = staticmethod(anthropic.completion_from_message)

    def __init__(self, call: ChatCall) -> None:
        super().__init__(call.target, call.body)
        self.path = "/v1/messages"
        upstream = anthropic.build_messages_request(
            call.body,
            call.target.upstream_id,
            max_output_tokens=call.target.max_output_tokens,
            stream=call.stream,
        )
        self.content = orjson.dumps(upstream)
        self.translator = self._messages = anthropic.MessagesStreamTranslator(
            include_usage=self.include_usage, **self.identity
        )

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data:
            return []
        parsed = orjson.loads(data)
        return self._messages.feed(event or parsed.get("type", ""), parsed)

    def is_done(self) -> bool:
        return self._messages.done


class AnthropicType(ProviderType):
    name = "anthropic"

    def auth_headers(self, instance: ProviderInstance) -> dict[str, str]:
        return {"x-api-key": instance.api_key, "anthropic-version": API_VERSION}

    def chat_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest:
        return AnthropicRequest(call)
