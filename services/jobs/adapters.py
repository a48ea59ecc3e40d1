"""Provider instances (media catalog rows) → adapter objects, without naming a provider."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from catalog.media import MediaProviderInstance

from .providers import PROVIDER_TYPES, provider_for
from .providers.base import MediaProvider, ProviderInstance

log = logging.getLogger("jobs")


def build_providers(instances: Iterable[MediaProviderInstance]) -> dict[str, MediaProvider]:
    """One adapter per configured instance. An instance whose type has no adapter yet is
    left out: its tasks fall over to the model's next route, or fail at no cost."""
    providers: dict[str, MediaProvider] = {}
    for instance in instances:
        if instance.type not in PROVIDER_TYPES:
            log.warning("no adapter for provider type %r: %s is off", instance.type, instance.name)
            continue
        providers[instance.name] = provider_for(
            ProviderInstance(
                name=instance.name,
                type=instance.type,
                base_url=instance.base_url,
                api_key=instance.api_key,
            )
        )
    return providers
