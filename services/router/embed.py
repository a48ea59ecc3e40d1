"""The embeddings call: parsed and checked here, sent by the model's provider type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aig_common.errors import model_not_found
from catalog.live import LiveCatalog

from .adapters import embeddings
from .adapters.base import TokenUsage
from .chat import unreachable
from .config import RouterConfig
from .providers import EmbeddingsCall
from .upstream import UpstreamClients, UpstreamReply, UpstreamUnreachable


@dataclass(slots=True)
class EmbeddingsResult:
    response: dict[str, Any]
    usage: TokenUsage
    provider: str
    # The canonical catalog id (the request may have named an alias).
    model_id: str


class EmbeddingsService:
    def __init__(self, config: LiveCatalog[RouterConfig], clients: UpstreamClients) -> None:
        self._config = config
        self._clients = clients

    async def create(self, body: dict[str, Any]) -> EmbeddingsResult:
        model_id = body.get("model")
        if not isinstance(model_id, str):
            raise model_not_found(model_id)
        config, model = self._config.find(lambda current: current.catalog.embedding(model_id))
        if model is None:
            raise model_not_found(model_id)
        call = EmbeddingsCall(
            model=model,
            body=body,
            inputs=embeddings.parse_embeddings_input(body),
            requested_format=embeddings.parse_encoding_format(body),
            dimensions=embeddings.parse_dimensions(body, model),
        )
        provider = config.providers.get(model.provider)

        async def post(path: str, upstream: dict[str, Any]) -> UpstreamReply:
            try:
                return await self._clients.post(provider.destination, path, orjson.dumps(upstream))
            except UpstreamUnreachable as exc:
                raise unreachable(model.provider, exc) from exc

        result, usage = await provider.type.embed(provider.instance, call, post)
        return EmbeddingsResult(
            response=result, usage=usage, provider=model.provider, model_id=model.id
        )
