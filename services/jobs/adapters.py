"""Provider instances (catalog rows) → adapter objects (code), without naming a provider.

A provider type is the module `jobs.providers.<type>`; it offers
`create_provider(instance: ProviderInstance) -> MediaProvider`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable

from catalog.media import MediaProviderInstance

from .providers.base import MediaProvider, ProviderInstance

log = logging.getLogger("jobs")


def build_providers(instances: Iterable[MediaProviderInstance]) -> dict[str, MediaProvider]:
    """One adapter per configured instance; an instance whose type has no module yet is
    left out (its tasks fall over to the model's next route, or fail at no cost)."""
    providers: dict[str, MediaProvider] = {}
    for instance in instances:
        try:
            module = importlib.import_module(f"jobs.providers.{instance.type}")
        except ImportError:
            log.warning(
                "no adapter for media provider type %r; %s is off", instance.type, instance.name
            )
            continue
        providers[instance.name] = module.create_provider(
            ProviderInstance(
                name=instance.name,
                type=instance.type,
                base_url=instance.base_url,
                api_key=instance.api_key,
            )
        )
    return providers
