"""The provider registry: provider types by name, and the catalog's instances of them.

To support a new API dialect, add a `ProviderType` module here and list it in
`PROVIDER_TYPES`. To add a provider that speaks an existing dialect (vLLM, Ollama, Groq,
Together, DeepSeek, Mistral, another Azure resource), add a row to the catalog's
`providers` list; no code changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from catalog.models import Catalog

from ..upstream import Destination
from .anthropic import AnthropicType
from .base import (
    ANTHROPIC_MESSAGES,
    OPENAI_RESPONSES,
    ChatCall,
    EmbeddingsCall,
    NativeCall,
    ProviderInstance,
    ProviderType,
    UpstreamRequest,
)
from .gemini import GeminiType
from .openai import AzureOpenAIType, OpenAIType, OpenRouterType

PROVIDER_TYPES: Mapping[str, ProviderType] = {
    provider_type.name: provider_type
    for provider_type in (
        OpenAIType(),
        OpenRouterType(),
        AzureOpenAIType(),
        AnthropicType(),
        GeminiType(),
    )
}


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider instance, ready to call: its data, its type's code, where it goes."""

    instance: ProviderInstance
    type: ProviderType
    destination: Destination


class ProviderRegistry:
    """The catalog's provider rows, resolved and checked against the provider types."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    @classmethod
    def from_catalog(
        cls, catalog: Catalog, env: Mapping[str, str], sandbox_url: str
    ) -> ProviderRegistry:
        """Raises ValueError naming the row when a provider or a model cannot be served."""
        providers: dict[str, Provider] = {}
        for row in catalog.providers:
            provider_type = PROVIDER_TYPES.get(row.type)
            if provider_type is None:
                raise ValueError(
                    f"provider '{row.name}': unknown type '{row.type}'; "
                    f"known types: {sorted(PROVIDER_TYPES)}"
                )
            provider_type.check_row(row)
            instance = ProviderInstance.resolve(row, env, sandbox_url)
            headers = {
                **dict(row.headers),
                **provider_type.auth_headers(instance),
                "content-type": "application/json",
            }
            destination = Destination(
                name=row.name,
                base_url=instance.base_url,
                headers=tuple(sorted(headers.items())),
                read_timeout_s=row.timeout_s,
            )
            providers[row.name] = Provider(instance, provider_type, destination)
        for model in catalog.embedding_models:
            if not providers[model.provider].type.supports_embeddings:
                raise ValueError(
                    f"embedding model '{model.id}': provider '{model.provider}' "
                    f"(type '{providers[model.provider].instance.type}') serves no embeddings"
                )
        return cls(providers)

    def get(self, name: str) -> Provider:
        return self._providers[name]

    def sandboxed(self) -> list[str]:
        return [name for name, p in self._providers.items() if p.instance.sandboxed]


__all__ = [
    "ANTHROPIC_MESSAGES",
    "OPENAI_RESPONSES",
    "PROVIDER_TYPES",
    "ChatCall",
    "EmbeddingsCall",
    "NativeCall",
    "Provider",
    "ProviderInstance",
    "ProviderRegistry",
    "ProviderType",
    "UpstreamRequest",
]
