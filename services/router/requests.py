"""Upstream requests: one provider's request body plus the translators for its answer."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from aig_common.usage import TokenUsage
from catalog.models import ChatModel, Route

from .adapters import anthropic, gemini, openai_compat
from .adapters.base import UpstreamError

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


def build_request(
    target: Target,
    body: dict[str, Any],
    *,
    stream: bool,
    images: Mapping[str, tuple[str, bytes]],
) -> UpstreamRequest:
    created = int(time.time())
    if target.provider == "anthropic":
        return AnthropicRequest(target, body, stream, completion_id(), created)
    if target.provider == "google":
        return GeminiRequest(target, body, stream, completion_id(), created, images)
    return OpenAIRequest(target, body, stream)


class UpstreamRequest:
    """One provider's request plus the translators for its answer."""

    path: str
    content: bytes
    error_from_response: Callable[..., UpstreamError]

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        raise NotImplementedError

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        return []

    def is_done(self) -> bool:
        raise NotImplementedError

    def usage(self) -> TokenUsage | None:
        raise NotImplementedError


class OpenAIRequest(UpstreamRequest):
    def __init__(self, target: Target, body: dict[str, Any], stream: bool) -> None:
        self._target = target
        self.path = "/chat/completions"
        upstream = openai_compat.build_chat_request(body, target.upstream_id, stream=stream)
        self.content = orjson.dumps(upstream)
        self.error_from_response = openai_compat.error_from_response
        self._rewriter = openai_compat.ChatStreamRewriter(target.public_id, wants_usage(body))
        self._done = False

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return openai_compat.completion_from_response(payload, public_model=self._target.public_id)

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if data.startswith("[DONE]"):
            self._done = True
            return []
        if not data:
            return []
        return self._rewriter.feed(orjson.loads(data))

    def is_done(self) -> bool:
        return self._done

    def usage(self) -> TokenUsage | None:
        return self._rewriter.usage


class AnthropicRequest(UpstreamRequest):
    def __init__(
        self,
        target: Target,
        body: dict[str, Any],
        stream: bool,
        completion_id: str,
        created: int,
    ) -> None:
        self._target = target
        self._completion_id = completion_id
        self._created = created
        self.path = "/v1/messages"
        upstream = anthropic.build_messages_request(
            body, target.upstream_id, max_output_tokens=target.max_output_tokens, stream=stream
        )
        self.content = orjson.dumps(upstream)
        self.error_from_response = anthropic.error_from_response
        self._translator = anthropic.MessagesStreamTranslator(
            public_model=target.public_id,
            completion_id=completion_id,
            created=created,
            include_usage=wants_usage(body),
        )

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return anthropic.completion_from_message(
            payload,
            public_model=self._target.public_id,
            completion_id=self._completion_id,
            created=self._created,
        )

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data:
            return []
        parsed = orjson.loads(data)
        return self._translator.feed(event or parsed.get("type", ""), parsed)

    def is_done(self) -> bool:
        return self._translator.done

    def usage(self) -> TokenUsage | None:
        return self._translator.usage


class GeminiRequest(UpstreamRequest):
    def __init__(
        self,
        target: Target,
        body: dict[str, Any],
        stream: bool,
        completion_id: str,
        created: int,
        images: Any,
    ) -> None:
        self._target = target
        self._completion_id = completion_id
        self._created = created
        self.path = gemini.generate_path(target.upstream_id, stream=stream)
        upstream = gemini.build_generate_request(
            body, fetched_images=images, max_output_tokens=target.max_output_tokens
        )
        self.content = orjson.dumps(upstream)
        self.error_from_response = gemini.error_from_response
        self._translator = gemini.GenerateStreamTranslator(
            public_model=target.public_id,
            completion_id=completion_id,
            created=created,
            include_usage=wants_usage(body),
        )
        self._finished = False

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return gemini.completion_from_response(
            payload,
            public_model=self._target.public_id,
            completion_id=self._completion_id,
            created=self._created,
        )

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data:
            return []
        return self._translator.feed(orjson.loads(data))

    def finish(self) -> list[dict[str, Any]]:
        # Gemini ends a stream by closing it; only a stream that reported a finishReason is whole.
        if not self._translator.saw_finish_reason:
            return []
        self._finished = True
        return self._translator.finish()

    def is_done(self) -> bool:
        return self._finished

    def usage(self) -> TokenUsage | None:
        return self._translator.usage
