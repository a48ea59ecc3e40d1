"""OpenAI's wire format: OpenAI itself, every OpenAI-compatible server, OpenRouter, Azure.

The body passes through with the model id rewritten (see `adapters/openai_compat.py`).
What differs between these types is only where a call goes and how it authenticates, and
that the `openai` type also takes a /v1/responses call as it is, on its own `/responses`
endpoint (`openai_responses.py`), where the others are sent its chat translation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from aig_common.usage import TokenUsage
from catalog.models import ProviderRow

from ..adapters import embeddings, openai_compat
from ..requests import wants_usage
from .base import (
    OPENAI_RESPONSES,
    ChatCall,
    EmbeddingsCall,
    Post,
    ProviderInstance,
    ProviderType,
    UpstreamRequest,
)
from .openai_responses import OpenAIResponsesRequest


class OpenAIRequest(UpstreamRequest):
    error_from_response = staticmethod(openai_compat.error_from_response)

    def __init__(self, path: str, call: ChatCall) -> None:
        self._target = call.target
        self.path = path
        upstream = openai_compat.build_chat_request(
            call.body, call.target.upstream_id, stream=call.stream
        )
        self.content = orjson.dumps(upstream)
        self._rewriter = openai_compat.ChatStreamRewriter(
            call.target.public_id, wants_usage(call.body)
        )
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


class OpenAIType(ProviderType):
    """OpenAI and any server that speaks its API under a base URL ending in `/v1`."""

    name = "openai"
    supports_embeddings = True
    # A row may say its server also has OpenAI's Responses API (`responses_api: true`);
    # /v1/responses calls then pass through to it. Subtypes with no such API refuse it.
    options: ClassVar[frozenset[str]] = frozenset({"responses_api"})

    def path(self, instance: ProviderInstance, upstream_id: str, operation: str) -> str:
        """Where `operation` ("chat/completions", "embeddings") lives, below the base URL."""
        return "/" + operation

    def chat_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest:
        path = self.path(instance, call.target.upstream_id, "chat/completions")
        return OpenAIRequest(path, call)

    def native_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest | None:
        if not instance.responses_api or call.native is None:
            return None
        if call.native.dialect != OPENAI_RESPONSES:
            return None
        path = self.path(instance, call.target.upstream_id, "responses")
        return OpenAIResponsesRequest(path, call)

    async def embed(
        self, instance: ProviderInstance, call: EmbeddingsCall, post: Post
    ) -> tuple[dict[str, Any], TokenUsage]:
        upstream = embeddings.build_openai_embeddings_request(call.body, call.model.upstream_id)
        response = await post(self.path(instance, call.model.upstream_id, "embeddings"), upstream)
        if response.status != 200:
            raise openai_compat.error_from_response(
                response.status, response.body, response.headers
            )
        return embeddings.embeddings_from_openai_response(
            orjson.loads(response.body),
            public_model=call.model.id,
            requested_format=call.requested_format,
        )


class OpenRouterType(OpenAIType):
    """OpenRouter: OpenAI's format plus its extras, which the OpenAI translation already
    handles: `usage.cost` (aig's cost price, kept from clients), numeric error codes, and
    errors sent as a chunk inside a 200 stream. Its optional attribution headers
    (`HTTP-Referer`, `X-Title`) go in the row's `headers`."""

    name = "openrouter"
    # OpenRouter's Responses endpoint is a beta; its chat API serves every model.
    options = frozenset()


class AzureOpenAIType(OpenAIType):
    """Azure OpenAI: the model is a deployment named in the URL, the key travels in an
    `api-key` header, and every call carries the `api-version` the row names.

    base_url is the resource endpoint (`https://<resource>.openai.azure.com`); a model row's
    `upstream_id` is its deployment name.
    """

    name = "azure_openai"
    # Azure's Responses API lives at other paths and api-versions than its deployments';
    # its rows may not claim `responses_api`.
    options = frozenset({"api_version"})

    def check_row(self, row: ProviderRow) -> None:
        super().check_row(row)
        if not row.api_version:
            raise ValueError(f"provider '{row.name}': type 'azure_openai' needs 'api_version'")

    def auth_headers(self, instance: ProviderInstance) -> dict[str, str]:
        return {"api-key": instance.api_key} if instance.api_key else {}

    def path(self, instance: ProviderInstance, upstream_id: str, operation: str) -> str:
        return f"/openai/deployments/{upstream_id}/{operation}?api-version={instance.api_version}"
