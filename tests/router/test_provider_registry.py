"""Provider rows resolved against the provider types and the environment."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from catalog.models import Catalog, ProviderRow, load_catalog
from router.providers import PROVIDER_TYPES, ProviderRegistry
from router.providers.base import ChatCall
from router.requests import Target

SANDBOX = "http://127.0.0.1:9999"


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return load_catalog()


def _with_rows(catalog: Catalog, *rows: ProviderRow) -> Catalog:
    return dataclasses.replace(catalog, providers=(*catalog.providers, *rows))


def test_unkeyed_providers_go_to_the_sandbox_keyed_ones_to_their_api(shipped: Catalog) -> None:
    registry = ProviderRegistry.from_catalog(shipped, {"OPENAI_API_KEY": "sk-real"}, SANDBOX)
    openai = registry.get("openai")
    assert not openai.instance.sandboxed
    assert openai.destination.base_url == "https://api.openai.com/v1"
    assert ("authorization", "Bearer sk-real") in openai.destination.headers
    google = registry.get("google")
    assert google.instance.sandboxed and google.destination.base_url == SANDBOX + "/google"
    assert ("x-goog-api-key", "sandbox-key") in google.destination.headers
    anthropic = dict(registry.get("anthropic").destination.headers)
    assert anthropic["anthropic-version"] == "2023-06-01" and "authorization" not in anthropic
    assert set(registry.sandboxed()) == {"anthropic", "google", "openrouter"}


def test_base_url_overrides_by_convention_and_by_row(shipped: Catalog) -> None:
    named = ProviderRow(
        "together", "openai", "https://api.together.xyz/v1", None, base_url_env="TOGETHER_URL"
    )
    env = {
        "OPENAI_API_KEY": "k",
        "AIG_OPENAI_BASE_URL": "https://proxy.example/v1/",
        "AIG_GOOGLE_BASE_URL": "https://gemini-proxy.example",
        "TOGETHER_URL": "https://together-proxy.example/v1",
    }
    registry = ProviderRegistry.from_catalog(_with_rows(shipped, named), env, SANDBOX)
    assert registry.get("openai").destination.base_url == "https://proxy.example/v1"
    assert registry.get("google").destination.base_url == "https://gemini-proxy.example"
    assert registry.get("together").destination.base_url == "https://together-proxy.example/v1"


def test_a_row_of_an_existing_type_needs_no_code(shipped: Catalog) -> None:
    groq = ProviderRow(
        name="groq",
        type="openai",
        base_url="https://api.groq.com/openai/v1",
        key_env="GROQ_API_KEY",
        headers=(("x-team", "search"),),
        timeout_s=42.0,
    )
    registry = ProviderRegistry.from_catalog(
        _with_rows(shipped, groq), {"GROQ_API_KEY": "gsk"}, SANDBOX
    )
    provider = registry.get("groq")
    assert provider.type is PROVIDER_TYPES["openai"]
    headers = dict(provider.destination.headers)
    assert headers["authorization"] == "Bearer gsk" and headers["x-team"] == "search"
    assert provider.destination.read_timeout_s == 42.0


def test_azure_calls_the_deployment_with_api_key_and_version(shipped: Catalog) -> None:
    azure = ProviderRow(
        name="azure",
        type="azure_openai",
        base_url="https://res.openai.azure.com",
        key_env="AZURE_OPENAI_API_KEY",
        api_version="2024-10-21",
    )
    registry = ProviderRegistry.from_catalog(
        _with_rows(shipped, azure), {"AZURE_OPENAI_API_KEY": "az"}, SANDBOX
    )
    provider = registry.get("azure")
    assert dict(provider.destination.headers)["api-key"] == "az"
    assert "authorization" not in dict(provider.destination.headers)
    model = shipped.chat("gpt-4o-mini")
    assert model is not None
    route = dataclasses.replace(model.route, provider="azure", upstream_id="prod-mini")
    request = provider.type.chat_request(
        provider.instance,
        ChatCall(Target(route, model, model.id), {"model": "gpt-4o-mini", "messages": []}, True),
    )
    assert request.path == "/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            ProviderRow("bedrock", "bedrock", "https://x.example", None),
            r"provider 'bedrock': unknown type 'bedrock'; known types: \[",
        ),
        (
            ProviderRow("azure", "azure_openai", "https://x.example", "K"),
            r"provider 'azure': type 'azure_openai' needs 'api_version'",
        ),
        (
            ProviderRow("vllm", "openai", "https://x.example", None, api_version="1"),
            r"provider 'vllm': type 'openai' takes no 'api_version'",
        ),
        (
            ProviderRow("or", "openrouter", "https://x.example", None, responses_api=True),
            r"provider 'or': type 'openrouter' takes no 'responses_api'",
        ),
    ],
)
def test_rows_a_type_cannot_serve_are_refused(
    shipped: Catalog, row: ProviderRow, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        ProviderRegistry.from_catalog(_with_rows(shipped, row), {}, SANDBOX)


def test_an_embedding_model_on_a_type_without_embeddings_is_refused(shipped: Catalog) -> None:
    embedding = dataclasses.replace(shipped.embedding_models[0], provider="anthropic")
    broken = dataclasses.replace(shipped, embedding_models=(embedding,))
    with pytest.raises(ValueError, match=r"provider 'anthropic' .* serves no embeddings"):
        ProviderRegistry.from_catalog(broken, {}, SANDBOX)


def test_every_type_builds_a_request_for_a_plain_chat(shipped: Catalog) -> None:
    registry = ProviderRegistry.from_catalog(shipped, {}, SANDBOX)
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    for name in ("openai", "anthropic", "google", "openrouter"):
        provider = registry.get(name)
        model = next(m for m in shipped.chat_models if m.provider == name)
        call = ChatCall(Target(model.route, model, model.id), body, stream=False)
        request = provider.type.chat_request(provider.instance, call)
        assert request.path.startswith("/") and request.content
