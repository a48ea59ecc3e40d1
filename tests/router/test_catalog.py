"""The model catalog: the shipped data, its validation, price math and /v1/models."""

from __future__ import annotations

import calendar
import copy
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import openai.types
import pytest
import yaml

from catalog.models import (
    CATALOG_PATH_ENV,
    DEFAULT_IMAGE_INPUT_TOKENS,
    Catalog,
    Route,
    UnknownFallback,
    load_catalog,
)
from router.adapters.base import TokenUsage


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def small_document() -> dict[str, Any]:
    """A valid two-chat-model, one-embedding-model catalog to break in tests."""
    chat = {
        "id": "alpha",
        "provider": "openai",
        "upstream_id": "alpha-upstream",
        "owned_by": "openai",
        "created": dt.date(2024, 1, 2),
        "input_nano_usd_per_token": 1000,
        "cached_input_nano_usd_per_token": 500,
        "output_nano_usd_per_token": 4000,
        "context_window": 1000,
        "max_output_tokens": 100,
        "capabilities": {"vision": True, "tools": True, "json": True},
        "fallbacks": [{"provider": "openrouter", "upstream_id": "openai/alpha"}, "beta"],
    }
    beta = {**copy.deepcopy(chat), "id": "beta", "provider": "anthropic", "fallbacks": []}
    embedding = {
        "id": "embed",
        "provider": "google",
        "upstream_id": "embed-001",
        "owned_by": "google",
        "created": 1700000000,
        "input_nano_usd_per_token": 150,
        "default_dimensions": 768,
        "max_input_tokens": 2048,
        "dimensions_configurable": True,
    }
    providers = [
        {"name": name, "type": kind, "base_url": f"https://{name}.example/v1", "key_env": "K"}
        for name, kind in (
            ("openai", "openai"),
            ("anthropic", "anthropic"),
            ("google", "gemini"),
            ("openrouter", "openrouter"),
        )
    ]
    return {"providers": providers, "chat_models": [chat, beta], "embedding_models": [embedding]}


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


# --- the shipped catalog ------------------------------------------------------------------------


def test_shipped_catalog_covers_every_provider(catalog: Catalog) -> None:
    assert len(catalog.chat_models) >= 37
    assert len(catalog.embedding_models) >= 5
    declared = {row.name for row in catalog.providers}
    assert {m.provider for m in catalog.chat_models} == declared
    assert {m.provider for m in catalog.embedding_models} == {"openai", "google", "openrouter"}


@pytest.mark.parametrize(
    ("model_id", "provider", "upstream_id"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5-20250929"),
        ("gemini-2.5-flash", "google", "gemini-2.5-flash"),
        ("deepseek-chat", "openrouter", "deepseek/deepseek-chat"),
        ("mistral-large", "openrouter", "mistralai/mistral-large"),
    ],
)
def test_shipped_routes(catalog: Catalog, model_id: str, provider: str, upstream_id: str) -> None:
    model = catalog.chat(model_id)
    assert model is not None
    assert (model.provider, model.upstream_id) == (provider, upstream_id)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gpt-5", "gpt-5"),
        ("gpt-5-codex", "gpt-5-codex"),
        ("gpt-5.5", "gpt-5.5"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("gemini-3-pro", "gemini-3-pro-preview"),
        ("deepseek-v3", "deepseek-chat"),
        ("mistral-large", "mistral-large"),
    ],
)
def test_every_name_the_product_page_uses_resolves(
    catalog: Catalog, name: str, canonical: str
) -> None:
    model = catalog.chat(name)
    assert model is not None and model.id == canonical
    listed = catalog.model_object(name)
    assert listed is not None and listed["id"] == name
    assert listed["aig"]["canonical_id"] == canonical


def test_chain_follows_the_request_option(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    default = [link.route for link in catalog.chain(model)]
    assert default == [model.route, *model.fallbacks]
    assert [link.route for link in catalog.chain(model, False)] == [model.route]
    named = catalog.chain(model, ["gemini-3-pro", "gpt-4o"])
    # An alias resolves; a repeat of a route already in the chain is dropped.
    assert [link.model.id for link in named] == ["gpt-4o", "gemini-3-pro-preview"]
    with pytest.raises(UnknownFallback) as raised:
        catalog.chain(model, ["gpt-4o-mini", "no-such-model"])
    assert (raised.value.index, raised.value.model_id) == (1, "no-such-model")


def test_a_kept_chain_follows_the_model_it_is_asked_for(catalog: Catalog) -> None:
    """The chain with catalog fallbacks is built once per model and kept; a caller changing
    the list it got does not change the next one, and a model of another catalog version
    (a reload changed its fallbacks) gets its own fallbacks, not the kept chain."""
    model = catalog.chat("gpt-4o")
    assert model is not None and model.fallbacks
    first = catalog.chain(model)
    first.clear()
    assert [link.route for link in catalog.chain(model)] == [model.route, *model.fallbacks]
    edited = dataclasses.replace(model, fallbacks=())
    assert edited.route == model.route
    assert [link.route for link in catalog.chain(edited)] == [model.route]
    assert [link.route for link in catalog.chain(model)] == [model.route, *model.fallbacks]


def test_long_context_price_is_listed_for_gpt_5_5(catalog: Catalog) -> None:
    listed = catalog.model_object("gpt-5.5")
    assert listed is not None
    pricing = listed["aig"]["pricing"]
    assert pricing["input_usd_per_million_tokens"] == "5"
    assert pricing["long_context"] == {
        "above_prompt_tokens": 272000,
        "input_usd_per_million_tokens": "10",
        "output_usd_per_million_tokens": "45",
    }


def test_shipped_prices_are_integers(catalog: Catalog) -> None:
    for model in catalog.chat_models:
        prices = (
            model.input_nano_usd_per_token,
            model.cached_input_nano_usd_per_token,
            model.output_nano_usd_per_token,
        )
        for price in prices:
            assert type(price) is int and price >= 0, model.id
        assert model.cached_input_nano_usd_per_token <= model.input_nano_usd_per_token
        assert model.output_nano_usd_per_token > 0, model.id
    for embedding in catalog.embedding_models:
        assert type(embedding.input_nano_usd_per_token) is int, embedding.id


def test_gpt_4o_list_price(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    # $2.50 / $1.25 / $10.00 per 1M tokens.
    assert model.input_nano_usd_per_token == 2500
    assert model.cached_input_nano_usd_per_token == 1250
    assert model.output_nano_usd_per_token == 10000


def test_shipped_fallbacks_are_valid(catalog: Catalog) -> None:
    for model in catalog.chat_models:
        for route in model.fallbacks:
            assert catalog.chat(route.model_id) is not None, (model.id, route)
            assert catalog.provider(route.provider) is not None
            assert route != model.route
        assert len(set(model.fallbacks)) == len(model.fallbacks)
        # Every model can survive an outage of its own provider.
        assert any(route.provider != model.provider for route in model.fallbacks), model.id


def test_gpt_4o_falls_back_to_itself_on_openrouter_first(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    assert model.fallbacks[0] == Route("gpt-4o", "openrouter", "openai/gpt-4o")
    assert model.fallbacks[1].model_id == "claude-sonnet-4-5"


def test_string_fallback_resolves_to_the_targets_own_route(catalog: Catalog) -> None:
    model = catalog.chat("deepseek-chat")
    target = catalog.chat("gpt-4.1-mini")
    assert model is not None and target is not None
    assert model.fallbacks == (target.route,)


def test_catalog_has_models_lacking_each_capability(catalog: Catalog) -> None:
    assert any(not m.capabilities.vision for m in catalog.chat_models)
    assert any(not m.capabilities.tools for m in catalog.chat_models)
    assert any(not m.capabilities.json for m in catalog.chat_models)
    deepseek = catalog.chat("deepseek-chat")
    assert deepseek is not None and not deepseek.capabilities.vision


def test_lookups_are_separate_per_kind(catalog: Catalog) -> None:
    assert catalog.chat("text-embedding-3-small") is None
    assert catalog.embedding("gpt-4o") is None
    assert catalog.chat("no-such-model") is None
    small = catalog.embedding("text-embedding-3-small")
    assert small is not None
    assert (small.default_dimensions, small.dimensions_configurable) == (1536, True)


# --- /v1/models -----------------------------------------------------------------------------------


def test_models_list_matches_the_openai_shape(catalog: Catalog) -> None:
    body = catalog.openai_models_list()
    assert body["object"] == "list"
    ids = [item["id"] for item in body["data"]]
    every_name = [m.id for m in catalog.all_models()] + [
        a for m in catalog.all_models() for a in m.aliases
    ]
    assert len(ids) == len(set(ids)) == len(every_name)
    assert set(ids) == set(every_name)
    for item in body["data"]:
        assert set(item) == {"id", "object", "created", "owned_by", "aig"}
        details = item["aig"]
        assert catalog.chat(details["canonical_id"]) or catalog.embedding(details["canonical_id"])
        assert details["context_window"] > 0 and "text" in details["modalities"]["input"]
        assert "input_usd_per_million_tokens" in details["pricing"]
        parsed = openai.types.Model.model_validate(item)
        assert parsed.object == "model"
        assert isinstance(item["created"], int) and item["created"] > 1_600_000_000


def test_created_is_stable_and_taken_from_the_data_file(catalog: Catalog) -> None:
    first = catalog.openai_models_list()
    second = load_catalog().openai_models_list()
    assert first == second
    gpt_4o = catalog.model_object("gpt-4o")
    assert gpt_4o is not None
    assert gpt_4o["created"] == calendar.timegm((2024, 5, 13, 0, 0, 0))
    assert catalog.model_object("nope") is None


# --- price math ------------------------------------------------------------


def test_price_charges_cached_tokens_at_the_cached_price(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=500, cached_prompt_tokens=400)
    # 600 x 2500 + 400 x 1250 + 500 x 10000
    price = model.price_nano_usd(usage)
    assert price == 7_000_000
    assert type(price) is int


def test_price_never_discounts_more_than_the_prompt(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    usage = TokenUsage(prompt_tokens=10, completion_tokens=0, cached_prompt_tokens=50)
    assert model.price_nano_usd(usage) == 10 * 1250


def test_price_uses_the_long_context_tier_past_its_threshold(catalog: Catalog) -> None:
    model = catalog.chat("gemini-2.5-pro")
    assert model is not None
    at_threshold = TokenUsage(prompt_tokens=200_000, completion_tokens=1000)
    assert model.price_nano_usd(at_threshold) == 200_000 * 1250 + 1000 * 10000
    above = TokenUsage(prompt_tokens=250_000, completion_tokens=1000, cached_prompt_tokens=50_000)
    assert model.price_nano_usd(above) == 200_000 * 2500 + 50_000 * 250 + 1000 * 15000


def test_worst_case_cost_ignores_caching_and_assumes_full_output(catalog: Catalog) -> None:
    model = catalog.chat("gpt-4o")
    assert model is not None
    assert model.worst_case_cost_nano_usd(1000, 500) == 1000 * 2500 + 500 * 10000
    pro = catalog.chat("gemini-2.5-pro")
    assert pro is not None
    assert pro.worst_case_cost_nano_usd(300_000, 10) == 300_000 * 2500 + 10 * 15000


def test_cache_writes_cost_their_own_price_by_lifetime(catalog: Catalog) -> None:
    sonnet = catalog.chat("claude-sonnet-4-5")
    assert sonnet is not None
    # Anthropic's list: $3 input, $3.75 5-minute writes, $6 1-hour writes, $0.30 reads.
    usage = TokenUsage(
        prompt_tokens=10_000,
        completion_tokens=100,
        cached_prompt_tokens=2_000,
        cache_write_prompt_tokens=3_000,
        cache_write_1h_prompt_tokens=1_000,
    )
    assert sonnet.price_nano_usd(usage) == (
        4_000 * 3000 + 2_000 * 300 + 3_000 * 3750 + 1_000 * 6000 + 100 * 15000
    )
    # Reported writes beyond the prompt are clamped like reads: never more than the prompt.
    over = TokenUsage(prompt_tokens=100, cached_prompt_tokens=60, cache_write_prompt_tokens=90)
    assert sonnet.price_nano_usd(over) == 60 * 300 + 40 * 3750
    # A reservation assumes the dearest prompt token: a 1-hour write.
    assert sonnet.worst_case_cost_nano_usd(1000, 10) == 1000 * 6000 + 10 * 15000
    # Where a write costs no extra (OpenAI), writes are priced as input.
    mini = catalog.chat("gpt-4o-mini")
    assert mini is not None
    plain = TokenUsage(prompt_tokens=100, cache_write_prompt_tokens=100)
    assert mini.price_nano_usd(plain) == 100 * 150 == mini.worst_case_cost_nano_usd(100, 0)


def test_every_claude_model_prices_cache_writes_as_anthropic_does(catalog: Catalog) -> None:
    claude = [model for model in catalog.chat_models if model.owned_by == "anthropic"]
    assert len(claude) >= 5
    for model in claude:
        prices = model.prices_for_prompt(0)
        # 1.25x and 2x input (Claude 3 Haiku's list price rounds to $0.30: 1.2x).
        assert prices.cache_write * 100 in range(
            120 * model.input_nano_usd_per_token, 126 * model.input_nano_usd_per_token
        ), model.id
        assert prices.cache_write_1h == 2 * model.input_nano_usd_per_token, model.id


def test_embedding_price(catalog: Catalog) -> None:
    model = catalog.embedding("text-embedding-3-small")
    assert model is not None
    # $0.02 per 1M tokens.
    assert model.price_nano_usd(TokenUsage(prompt_tokens=1_000_000)) == 20_000_000
    assert model.worst_case_cost_nano_usd(1000) == 20_000


# --- loading and validation ------------------------------------------------------------


def test_small_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, small_document()))
    alpha = catalog.chat("alpha")
    beta = catalog.chat("beta")
    assert alpha is not None and beta is not None
    assert alpha.created == calendar.timegm((2024, 1, 2, 0, 0, 0))
    assert alpha.fallbacks == (Route("alpha", "openrouter", "openai/alpha"), beta.route)
    assert alpha.image_input_tokens == DEFAULT_IMAGE_INPUT_TOKENS
    assert alpha.long_context is None


def test_environment_variable_selects_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CATALOG_PATH_ENV, str(write(tmp_path, small_document())))
    catalog = load_catalog()
    assert [m.id for m in catalog.chat_models] == ["alpha", "beta"]


def _chat(document: dict[str, Any], index: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = document["chat_models"][index]
    return entry


def _break_duplicate_id(doc: dict[str, Any]) -> None:
    _chat(doc, 1)["id"] = "alpha"


def _break_duplicate_across_kinds(doc: dict[str, Any]) -> None:
    doc["embedding_models"][0]["id"] = "beta"


def _break_provider(doc: dict[str, Any]) -> None:
    _chat(doc)["provider"] = "azure"


def _break_alias_clash(doc: dict[str, Any]) -> None:
    _chat(doc, 1)["aliases"] = ["alpha"]


def _break_provider_row(doc: dict[str, Any]) -> None:
    doc["providers"][0]["base_url"] = "api.openai.com"


def _break_provider_row_twice(doc: dict[str, Any]) -> None:
    doc["providers"].append(dict(doc["providers"][0]))


def _break_float_price(doc: dict[str, Any]) -> None:
    _chat(doc)["input_nano_usd_per_token"] = 2.5


def _break_negative_price(doc: dict[str, Any]) -> None:
    _chat(doc)["output_nano_usd_per_token"] = -1


def _break_bool_price(doc: dict[str, Any]) -> None:
    doc["embedding_models"][0]["input_nano_usd_per_token"] = True


def _break_cached_above_input(doc: dict[str, Any]) -> None:
    _chat(doc)["cached_input_nano_usd_per_token"] = 1001


def _break_dangling_fallback(doc: dict[str, Any]) -> None:
    _chat(doc)["fallbacks"] = ["gamma"]


def _break_self_fallback(doc: dict[str, Any]) -> None:
    _chat(doc)["fallbacks"] = ["alpha"]


def _break_fallback_to_embedding(doc: dict[str, Any]) -> None:
    _chat(doc)["fallbacks"] = ["embed"]


def _break_fallback_provider(doc: dict[str, Any]) -> None:
    _chat(doc)["fallbacks"] = [{"provider": "bedrock", "upstream_id": "x"}]


def _break_typo_field(doc: dict[str, Any]) -> None:
    _chat(doc)["max_output_token"] = 5


def _break_missing_field(doc: dict[str, Any]) -> None:
    del _chat(doc)["upstream_id"]


def _break_capabilities(doc: dict[str, Any]) -> None:
    _chat(doc)["capabilities"] = {"vision": "yes", "tools": True, "json": True}


def _break_half_a_cache_write_pair(doc: dict[str, Any]) -> None:
    _chat(doc)["cache_write_nano_usd_per_token"] = 5000


def _break_cache_write_below_input(doc: dict[str, Any]) -> None:
    _chat(doc)["cache_write_nano_usd_per_token"] = 1
    _chat(doc)["cache_write_1h_nano_usd_per_token"] = 1


def _break_output_above_context(doc: dict[str, Any]) -> None:
    _chat(doc)["max_output_tokens"] = 5000


@pytest.mark.parametrize(
    ("breaker", "expected"),
    [
        (_break_duplicate_id, r"chat_models\[1\]: duplicate model id or alias 'alpha'"),
        (
            _break_duplicate_across_kinds,
            r"embedding_models\[0\]: duplicate model id or alias 'beta'",
        ),
        (_break_provider, r"chat model 'alpha': unknown provider 'azure'"),
        (_break_alias_clash, r"chat_models\[1\]: duplicate model id or alias 'alpha'"),
        (_break_provider_row, r"provider 'openai': 'base_url' must be an http\(s\) URL"),
        (_break_provider_row_twice, r"provider 'openai': declared twice"),
        (_break_float_price, r"chat model 'alpha': 'input_nano_usd_per_token' must be an integer"),
        (_break_negative_price, r"chat model 'alpha': 'output_nano_usd_per_token' must be"),
        (_break_bool_price, r"embedding model 'embed': 'input_nano_usd_per_token' must be"),
        (_break_cached_above_input, r"chat model 'alpha': the cached input price exceeds"),
        (_break_dangling_fallback, r"chat model 'alpha': fallbacks\[0\] names unknown .*'gamma'"),
        (_break_self_fallback, r"chat model 'alpha': fallbacks\[0\] is the model's own route"),
        (_break_fallback_to_embedding, r"fallbacks\[0\] names unknown chat model 'embed'"),
        (_break_fallback_provider, r"chat model 'alpha': unknown provider 'bedrock'"),
        (_break_typo_field, r"chat model 'alpha': unknown fields \['max_output_token'\]"),
        (_break_missing_field, r"chat model 'alpha': 'upstream_id' must be a non-empty string"),
        (_break_capabilities, r"chat model 'alpha': 'vision' must be true or false"),
        (_break_output_above_context, r"chat model 'alpha': 'max_output_tokens' exceeds"),
        (_break_half_a_cache_write_pair, r"chat model 'alpha': cache write prices come as a pair"),
        (_break_cache_write_below_input, r"chat model 'alpha': a cache write price is below"),
    ],
)
def test_broken_catalog_names_the_entry(tmp_path: Path, breaker: Any, expected: str) -> None:
    document = small_document()
    breaker(document)
    with pytest.raises(ValueError, match=expected):
        load_catalog(write(tmp_path, document))


def test_unparseable_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("chat_models: [\n  {id: x", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_catalog(path)


def test_empty_section_is_rejected(tmp_path: Path) -> None:
    document = small_document()
    document["embedding_models"] = []
    with pytest.raises(ValueError, match="'embedding_models' must be a non-empty list"):
        load_catalog(write(tmp_path, document))
