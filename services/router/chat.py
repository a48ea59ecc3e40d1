"""The chat-completions call: resolve the model, translate, call the provider, translate back."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from aig_common.errors import APIError, error_body
from catalog.estimate import estimate_prompt_tokens
from catalog.models import Catalog, ChatModel

from .adapters import anthropic, gemini, openai_compat
from .adapters.base import TokenUsage, UpstreamError
from .adapters.sse import SSEDecoder
from .capabilities import check_chat_request
from .upstream import UpstreamClients

# Anthropic requires max_tokens; when the client sets none we ask for at most this many, so a
# default call is neither truncated early nor reserved at a model's 64k-token worst case.
DEFAULT_MAX_OUTPUT_TOKENS = 8192


@dataclass(slots=True)
class ChatResult:
    completion: dict[str, Any]
    usage: TokenUsage
    provider: str


@dataclass(slots=True)
class StreamOutcome:
    """Filled in while a stream runs; read once the stream is exhausted."""

    provider: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    # False when the stream failed before the provider reported (or we could estimate) usage.
    reported_usage: bool = False


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _unreachable(provider: str, exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        status, code, what = 504, "upstream_timeout", "did not answer in time"
    else:
        status, code, what = 502, "upstream_unavailable", "could not be reached"
    message = f"The upstream provider '{provider}' {what} ({type(exc).__name__})."
    return UpstreamError(
        status=status,
        body=error_body(message, status=status, code=code),
        upstream_status=0,
    )


def _broken_stream(provider: str) -> UpstreamError:
    message = f"The upstream provider '{provider}' ended the stream before it was complete."
    return UpstreamError(
        status=502, body=error_body(message, status=502, code="upstream_stream_broken")
    )


def _output_chars(chunk: dict[str, Any]) -> int:
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        total += len(delta.get("content") or "")
        for call in delta.get("tool_calls") or ():
            total += len((call.get("function") or {}).get("arguments") or "")
    return total


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _max_output_tokens(model: ChatModel) -> int:
    return min(model.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS)


class ChatService:
    def __init__(self, catalog: Catalog, clients: UpstreamClients) -> None:
        self._catalog = catalog
        self._clients = clients

    def resolve(self, body: dict[str, Any]) -> ChatModel:
        model_id = body.get("model")
        model = self._catalog.chat(model_id) if isinstance(model_id, str) else None
        if model is None:
            raise APIError(
                404,
                f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        check_chat_request(body, model)
        return model

    async def complete(self, body: dict[str, Any]) -> ChatResult:
        model = self.resolve(body)
        provider = model.provider
        request = await self._upstream_request(model, body, stream=False)
        client = self._clients.client(provider)
        try:
            response = await client.post(request.path, content=request.content)
        except httpx.HTTPError as exc:
            raise _unreachable(provider, exc) from exc
        if response.status_code != 200:
            raise request.error_from_response(
                response.status_code, response.content, response.headers
            )
        payload = orjson.loads(response.content)
        completion, usage = request.parse_completion(payload)
        return ChatResult(completion=completion, usage=usage, provider=provider)

    async def stream(
        self, body: dict[str, Any], outcome: StreamOutcome
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields OpenAI chunks. Raises before the first chunk if the call cannot start."""
        model = self.resolve(body)
        provider = model.provider
        outcome.provider = provider
        request = await self._upstream_request(model, body, stream=True)
        async with self._open_stream(provider, request) as response:
            streamed_chars = 0
            try:
                async for chunk in self._translated(provider, request, response):
                    streamed_chars += _output_chars(chunk)
                    yield chunk
            finally:
                reported = request.usage()
                if reported is not None:
                    outcome.usage, outcome.reported_usage = reported, True
                elif streamed_chars:
                    # The stream ended (or the client left) before the provider's usage
                    # arrived: bill what was produced, estimated, rather than nothing.
                    outcome.usage = TokenUsage(
                        prompt_tokens=estimate_prompt_tokens(body),
                        completion_tokens=-(-streamed_chars // 4),
                    )
                    outcome.reported_usage = True

    @staticmethod
    async def _translated(
        provider: str, request: _UpstreamRequest, response: httpx.Response
    ) -> AsyncIterator[dict[str, Any]]:
        decoder = SSEDecoder()
        finished = False
        try:
            async for raw in response.aiter_bytes():
                for event in decoder.feed(raw):
                    for chunk in request.translate_event(event.event, event.data):
                        yield chunk
                    if request.is_done():
                        finished = True
            for event in decoder.flush():
                for chunk in request.translate_event(event.event, event.data):
                    yield chunk
            for chunk in request.finish():
                yield chunk
            finished = finished or request.is_done()
        except httpx.HTTPError as exc:
            raise _broken_stream(provider) from exc
        if not finished:
            raise _broken_stream(provider)

    @asynccontextmanager
    async def _open_stream(
        self, provider: str, request: _UpstreamRequest
    ) -> AsyncIterator[httpx.Response]:
        client = self._clients.client(provider)
        try:
            upstream = client.build_request("POST", request.path, content=request.content)
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            raise _unreachable(provider, exc) from exc
        try:
            if response.status_code != 200:
                try:
                    content = await response.aread()
                except httpx.HTTPError as exc:
                    raise _unreachable(provider, exc) from exc
                raise request.error_from_response(response.status_code, content, response.headers)
            yield response
        finally:
            await response.aclose()

    async def _upstream_request(
        self, model: ChatModel, body: dict[str, Any], *, stream: bool
    ) -> _UpstreamRequest:
        completion_id = _completion_id()
        created = int(time.time())
        if model.provider == "anthropic":
            return _AnthropicRequest(model, body, stream, completion_id, created)
        if model.provider == "google":
            urls = gemini.image_urls_to_fetch(body)
            images = await self._clients.fetch_images(urls) if urls else {}
            return _GeminiRequest(model, body, stream, completion_id, created, images)
        return _OpenAIRequest(model, body, stream)


class _UpstreamRequest:
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


class _OpenAIRequest(_UpstreamRequest):
    def __init__(self, model: ChatModel, body: dict[str, Any], stream: bool) -> None:
        self._model = model
        self.path = "/chat/completions"
        upstream = openai_compat.build_chat_request(body, model.upstream_id, stream=stream)
        self.content = orjson.dumps(upstream)
        self.error_from_response = openai_compat.error_from_response
        self._rewriter = openai_compat.ChatStreamRewriter(model.id, _wants_usage(body))
        self._done = False

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return openai_compat.completion_from_response(payload, public_model=self._model.id)

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


class _AnthropicRequest(_UpstreamRequest):
    def __init__(
        self,
        model: ChatModel,
        body: dict[str, Any],
        stream: bool,
        completion_id: str,
        created: int,
    ) -> None:
        self._model = model
        self._completion_id = completion_id
        self._created = created
        self.path = "/v1/messages"
        upstream = anthropic.build_messages_request(
            body, model.upstream_id, max_output_tokens=_max_output_tokens(model), stream=stream
        )
        self.content = orjson.dumps(upstream)
        self.error_from_response = anthropic.error_from_response
        self._translator = anthropic.MessagesStreamTranslator(
            public_model=model.id,
            completion_id=completion_id,
            created=created,
            include_usage=_wants_usage(body),
        )

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return anthropic.completion_from_message(
            payload,
            public_model=self._model.id,
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


class _GeminiRequest(_UpstreamRequest):
    def __init__(
        self,
        model: ChatModel,
        body: dict[str, Any],
        stream: bool,
        completion_id: str,
        created: int,
        images: Any,
    ) -> None:
        self._model = model
        self._completion_id = completion_id
        self._created = created
        self.path = gemini.generate_path(model.upstream_id, stream=stream)
        upstream = gemini.build_generate_request(
            body, fetched_images=images, max_output_tokens=_max_output_tokens(model)
        )
        self.content = orjson.dumps(upstream)
        self.error_from_response = gemini.error_from_response
        self._translator = gemini.GenerateStreamTranslator(
            public_model=model.id,
            completion_id=completion_id,
            created=created,
            include_usage=_wants_usage(body),
        )
        self._finished = False

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return gemini.completion_from_response(
            payload,
            public_model=self._model.id,
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
