"""Anthropic's Messages API (`/v1/messages`): translated from and to OpenAI's format, or,
for a client that spoke it (`/v1/messages` on the edge), passed through untranslated."""

from __future__ import annotations

from typing import Any

import orjson

from aig_common.usage import TokenUsage

from ..adapters import anthropic, openai_compat
from .base import (
    ANTHROPIC_MESSAGES,
    ChatCall,
    ProviderInstance,
    ProviderType,
    TranslatedRequest,
    UpstreamRequest,
)

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


class AnthropicNativeRequest(UpstreamRequest):
    """The client's own Messages request, passed through: Claude gets every field it was
    sent (thinking, cache_control, documents, server tools...), and its answer and stream
    events go back as Anthropic made them, with the public model id. Only `model` (the
    route's upstream id), `max_tokens` (capped at the model's maximum output, which is
    what admission reserved for) and `stream` are set here; the gateway's `aig` options
    are not Anthropic's and are removed. The client's `anthropic-beta` header goes too:
    a body may use a feature only under its beta name. The events are also read, for usage,
    the end of the stream and an `error` event (which fails the stream like a translated
    one's)."""

    native = True
    error_from_response = staticmethod(anthropic.error_from_response)

    def __init__(self, call: ChatCall) -> None:
        assert call.native is not None
        body = {
            key: value
            for key, value in call.native.body.items()
            if key not in openai_compat.AIG_ONLY_FIELDS
        }
        body["model"] = call.target.upstream_id
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int):
            body["max_tokens"] = min(max_tokens, call.target.model.max_output_tokens)
        body["stream"] = call.stream
        self.path = "/v1/messages"
        self.content = orjson.dumps(body)
        beta = call.native.headers.get("anthropic-beta")
        self.headers = {"anthropic-beta": beta} if beta else None
        self._public_model = call.target.public_id
        # Read for usage, errors and the end only; its OpenAI chunks are dropped.
        self._messages = anthropic.MessagesStreamTranslator(
            include_usage=False, public_model=self._public_model, completion_id="", created=0
        )

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        payload["model"] = self._public_model
        return payload, anthropic.usage_from_anthropic(payload.get("usage"))

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data:
            return []
        parsed = orjson.loads(data)
        kind = parsed.get("type") or event or ""
        self._messages.feed(kind, parsed)
        if kind == "message_start" and isinstance(parsed.get("message"), dict):
            parsed["message"]["model"] = self._public_model
        parsed.setdefault("type", kind)
        return [parsed]

    def is_done(self) -> bool:
        return self._messages.done

    def usage(self) -> TokenUsage | None:
        return self._messages.usage

    def output_pieces(self, chunk: dict[str, Any]) -> list[tuple[tuple[int, int], str]]:
        if chunk.get("type") != "content_block_delta":
            return []
        delta = chunk.get("delta") or {}
        text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
        return [((0, int(chunk.get("index") or 0)), text)] if isinstance(text, str) else []


class AnthropicType(ProviderType):
    name = "anthropic"

    def auth_headers(self, instance: ProviderInstance) -> dict[str, str]:
        return {"x-api-key": instance.api_key, "anthropic-version": API_VERSION}

    def chat_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest:
        return AnthropicRequest(call)

    def native_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest | None:
        if call.native is None or call.native.dialect != ANTHROPIC_MESSAGES:
            return None
        return AnthropicNativeRequest(call)
