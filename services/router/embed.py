"""The embeddings call: OpenAI-family models pass through, Gemini is translated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aig_common.errors import APIError
from catalog.models import Catalog

from .adapters import embeddings, gemini, openai_compat
from .adapters.base import TokenUsage
from .chat import _unreachable
from .upstream import UpstreamClients, UpstreamReply, UpstreamUnreachable


@dataclass(slots=True)
class EmbeddingsResult:
    response: dict[str, Any]
    usage: TokenUsage
    provider: str


class EmbeddingsService:
    def __init__(self, catalog: Catalog, clients: UpstreamClients) -> None:
        self._catalog = catalog
        self._clients = clients

    async def create(self, body: dict[str, Any]) -> EmbeddingsResult:
        model_id = body.get("model")
        model = self._catalog.embedding(model_id) if isinstance(model_id, str) else None
        if model is None:
            raise APIError(
                404,
                f"The model `{model_id}` does not exist or is not an embedding model.",
                param="model",
                code="model_not_found",
            )
        inputs = embeddings.parse_embeddings_input(body)
        requested_format = embeddings.parse_encoding_format(body)
        dimensions = embeddings.parse_dimensions(body, model)
        provider = model.provider
        if provider == "google":
            texts = embeddings.require_text_inputs(inputs, model)
            payloads = []
            # batchEmbedContents takes a bounded number of texts per call.
            for batch in embeddings.split_for_gemini(texts):
                upstream = embeddings.build_gemini_batch_embed_request(
                    batch, model.upstream_id, dimensions
                )
                path = embeddings.gemini_batch_embed_path(model.upstream_id)
                response = await self._post(provider, path, upstream)
                if response.status != 200:
                    raise gemini.error_from_response(
                        response.status, response.body, response.headers
                    )
                payloads.append(orjson.loads(response.body))
            result, usage = embeddings.embeddings_from_gemini_response(
                embeddings.merge_gemini_batch_responses(payloads),
                public_model=model.id,
                texts=texts,
                requested_format=requested_format,
            )
        else:
            upstream = embeddings.build_openai_embeddings_request(body, model.upstream_id)
            response = await self._post(provider, "/embeddings", upstream)
            if response.status != 200:
                raise openai_compat.error_from_response(
                    response.status, response.body, response.headers
                )
            result, usage = embeddings.embeddings_from_openai_response(
                orjson.loads(response.body),
                public_model=model.id,
                requested_format=requested_format,
            )
        return EmbeddingsResult(response=result, usage=usage, provider=provider)

    async def _post(self, provider: str, path: str, body: dict[str, Any]) -> UpstreamReply:
        try:
            return await self._clients.post(provider, path, orjson.dumps(body))
        except UpstreamUnreachable as exc:
            raise _unreachable(provider, exc) from exc
