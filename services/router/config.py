"""What the router serves from: the catalog and its provider instances, built together so
a reload swaps both at once (see `catalog.live.LiveCatalog`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from catalog.models import Catalog

from .providers import ProviderRegistry


@dataclass(frozen=True, slots=True)
class RouterConfig:
    catalog: Catalog
    providers: ProviderRegistry
    # The /v1/models body, serialised once per catalog version.
    models_body: bytes

    @classmethod
    def build(cls, catalog: Catalog, env: Mapping[str, str], sandbox_url: str) -> RouterConfig:
        """Raises ValueError when a provider row or model cannot be served."""
        return cls(
            catalog=catalog,
            providers=ProviderRegistry.from_catalog(catalog, env, sandbox_url),
            models_body=orjson.dumps(catalog.openai_models_list()),
        )


def builder(env: Mapping[str, str], sandbox_url: str) -> Callable[[Catalog], RouterConfig]:
    return lambda catalog: RouterConfig.build(catalog, env, sandbox_url)
