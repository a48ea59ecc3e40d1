"""Google's Gemini API (generateContent, streamGenerateContent, batchEmbedContents)."""

from __future__ import annotations

from typing import Any

import orjson

from aig_common.usage import TokenUsage

from ..adapters import embeddings, gemini
from .base import (
    ChatCall,
    EmbeddingsCall,
    Post,
    ProviderInstance,
    ProviderType,
    TranslatedRequest,
    UpstreamRequest,
)


class GeminiRequest(TranslatedRequest):
    error_from_response = staticmethod(gemini.error_from_response)
    completion_from = staticmethod(gemini.completion_from_response)

    def __init__(self, call: ChatCall) -> None:
        super().__init__(call.target, call.body)
        self.path = gemini.generate_path(call.target.upstream_id, stream=call.stream)
        upstream = gemini.build_generate_request(
            call.body, fetched_images=call.images, max_output_tokens=call.target.max_output_tokens
        )
        self.content = orjson.dumps(upstream)
        self.translator = self._generate = gemini.GenerateStreamTranslator(
            include_usage=self.include_usage, **self.identity
        )
        self._finished = False

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data:
            return []
        return self._generate.feed(orjson.loads(data))

    def finish(self) -> list[dict[str, Any]]:
        # Gemini ends a stream by closing it; only a stream that reported a finishReason is whole.
        if not self._generate.saw_finish_reason:
            return []
        self._finished = True
        return self._generate.finish()

    def is_done(self) -> bool:
        return self._finished


class GeminiType(ProviderType):
    name = "gemini"
    supports_embeddings = True

    def auth_headers(self, instance: ProviderInstance) -> dict[str, str]:
        return {"x-goog-api-key": instance.api_key}

    def image_urls_to_fetch(self, body: dict[str, Any]) -> list[str]:
        # Gemini takes images only as inline bytes (or Google-hosted files).
        return gemini.image_urls_to_fetch(body)

    def chat_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest:
        return GeminiRequest(call)

    async def embed(
        self, instance: ProviderInstance, call: EmbeddingsCall, post: Post
    ) -> tuple[dict[str, Any], TokenUsage]:
        texts = embeddings.require_text_inputs(call.inputs, call.model)
        payloads = []
        # batchEmbedContents takes a bounded number of texts per call.
        for batch in embeddings.split_for_gemini(texts):
            upstream = embeddings.build_gemini_batch_embed_request(
                batch, call.model.upstream_id, call.dimensions
            )
            response = await post(
                embeddings.gemini_batch_embed_path(call.model.upstream_id), upstream
            )
            if response.status != 200:
                raise gemini.error_from_response(response.status, response.body, response.headers)
            payloads.append(orjson.loads(response.body))
        return embeddings.embeddings_from_gemini_response(
            embeddings.merge_gemini_batch_responses(payloads),
            public_model=call.model.id,
            texts=texts,
            requested_format=call.requested_format,
        )
