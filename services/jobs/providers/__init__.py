"""Media provider adapters, one module per protocol, chosen by the instance's `type`.

The jobs service calls `provider_for(instance)` and then only the `MediaProvider` methods;
nothing outside a type's module knows a provider's wire format.
"""

from __future__ import annotations

import importlib

from jobs.providers.base import MediaProvider, ProviderInstance

# PROVIDER_TYPE -> the module that implements it, and its class.
_TYPES: dict[str, tuple[str, str]] = {
    "fal": ("jobs.providers.fal", "FalProvider"),
    "replicate": ("jobs.providers.replicate", "ReplicateProvider"),
    "openai_images": ("jobs.providers.openai_images", "OpenAIImagesProvider"),
}

PROVIDER_TYPES = frozenset(_TYPES)


def provider_for(instance: ProviderInstance) -> MediaProvider:
    """A new adapter for `instance` (it owns an HTTP client: `aclose()` it when done)."""
    try:
        module_name, class_name = _TYPES[instance.type]
    except KeyError:
        known = ", ".join(sorted(_TYPES))
        raise ValueError(
            f"provider {instance.name!r} has unknown type {instance.type!r} ({known})"
        ) from None
    provider: MediaProvider = getattr(importlib.import_module(module_name), class_name)(instance)
    return provider
