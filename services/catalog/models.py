"""The model catalog: which public model ids exist, where each is served and what it costs.

The data lives in `catalog.yaml` next to this module (operators may point
`AIG_CATALOG_PATH` at their own copy). It is validated completely on load, so a typo in a
price or a dangling fallback stops the router at start-up instead of mis-billing later.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aig_common.usage import TokenUsage

PROVIDERS = frozenset({"openai", "anthropic", "google", "openrouter"})
CATALOG_PATH_ENV = "AIG_CATALOG_PATH"
DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

# Worst-case prompt tokens one image may cost when the catalog says nothing more precise.
# It covers OpenAI's tile and patch schemes (≤ ~3,800 for gpt-4.1-nano) and Claude (~1,600).
DEFAULT_IMAGE_INPUT_TOKENS = 4000


@dataclass(frozen=True, slots=True)
class Capabilities:
    vision: bool
    tools: bool
    json: bool


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a call: send `upstream_id` to `provider`, bill as catalog `model_id`."""

    model_id: str
    provider: str
    upstream_id: str


@dataclass(frozen=True, slots=True)
class TokenPrices:
    input_nano_usd_per_token: int
    cached_input_nano_usd_per_token: int
    output_nano_usd_per_token: int


@dataclass(frozen=True, slots=True)
class LongContextPrices:
    """A higher tier applied to the whole call once the prompt exceeds `threshold_tokens`."""

    threshold_tokens: int
    prices: TokenPrices


@dataclass(frozen=True, slots=True)
class ChatModel:
    id: str
    provider: str
    upstream_id: str
    owned_by: str
    created: int
    input_nano_usd_per_token: int
    cached_input_nano_usd_per_token: int
    output_nano_usd_per_token: int
    context_window: int
    max_output_tokens: int
    capabilities: Capabilities
    fallbacks: tuple[Route, ...] = ()
    long_context: LongContextPrices | None = None
    image_input_tokens: int = DEFAULT_IMAGE_INPUT_TOKENS
    # When set, a second attempt starts on the next route if the first has not produced its
    # first token within this many milliseconds; the first to answer wins. Off by default.
    hedge_after_ms: int | None = None

    @property
    def route(self) -> Route:
        return Route(self.id, self.provider, self.upstream_id)

    def prices_for_prompt(self, prompt_tokens: int) -> TokenPrices:
        if self.long_context is not None and prompt_tokens > self.long_context.threshold_tokens:
            return self.long_context.prices
        return TokenPrices(
            self.input_nano_usd_per_token,
            self.cached_input_nano_usd_per_token,
            self.output_nano_usd_per_token,
        )

    def price_nano_usd(self, usage: TokenUsage) -> int:
        """Upstream cost of a finished call.

        `completion_tokens` already includes reasoning tokens (OpenAI's convention, which
        every adapter follows), so they are not added again.
        """
        # Clamp: a provider reporting more cached than prompt tokens must not yield a discount
        # larger than the prompt, and negative counts are never billable.
        prompt = max(usage.prompt_tokens, 0)
        cached = min(max(usage.cached_prompt_tokens, 0), prompt)
        completion = max(usage.completion_tokens, 0)
        prices = self.prices_for_prompt(prompt)
        return (
            (prompt - cached) * prices.input_nano_usd_per_token
            + cached * prices.cached_input_nano_usd_per_token
            + completion * prices.output_nano_usd_per_token
        )

    def worst_case_cost_nano_usd(self, prompt_tokens_estimate: int, max_output: int) -> int:
        """An upper bound for reservations: no cache discount, every output token used."""
        prompt = max(prompt_tokens_estimate, 0)
        prices = self.prices_for_prompt(prompt)
        return (
            prompt * prices.input_nano_usd_per_token
            + max(max_output, 0) * prices.output_nano_usd_per_token
        )


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    id: str
    provider: str
    upstream_id: str
    owned_by: str
    created: int
    input_nano_usd_per_token: int
    default_dimensions: int
    max_input_tokens: int
    dimensions_configurable: bool

    @property
    def route(self) -> Route:
        return Route(self.id, self.provider, self.upstream_id)

    def price_nano_usd(self, usage: TokenUsage) -> int:
        return max(usage.prompt_tokens, 0) * self.input_nano_usd_per_token

    def worst_case_cost_nano_usd(self, prompt_tokens_estimate: int) -> int:
        return max(prompt_tokens_estimate, 0) * self.input_nano_usd_per_token


@dataclass(frozen=True, slots=True)
class Catalog:
    chat_models: tuple[ChatModel, ...]
    embedding_models: tuple[EmbeddingModel, ...]
    _chat_by_id: dict[str, ChatModel] = field(init=False, repr=False, compare=False)
    _embedding_by_id: dict[str, EmbeddingModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_chat_by_id", {m.id: m for m in self.chat_models})
        object.__setattr__(self, "_embedding_by_id", {m.id: m for m in self.embedding_models})

    def chat(self, model_id: str) -> ChatModel | None:
        return self._chat_by_id.get(model_id)

    def embedding(self, model_id: str) -> EmbeddingModel | None:
        return self._embedding_by_id.get(model_id)

    def all_models(self) -> Iterator[ChatModel | EmbeddingModel]:
        yield from self.chat_models
        yield from self.embedding_models

    def model_object(self, model_id: str) -> dict[str, Any] | None:
        """One `/v1/models/{id}` object, or None for an unknown id."""
        model = self.chat(model_id) or self.embedding(model_id)
        return _model_object(model) if model is not None else None

    def openai_models_list(self) -> dict[str, Any]:
        """The `/v1/models` body, in catalog order."""
        return {"object": "list", "data": [_model_object(m) for m in self.all_models()]}


def _model_object(model: ChatModel | EmbeddingModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate the catalog; any defect raises ValueError naming the entry."""
    source = path if path is not None else _configured_catalog_path()
    text = source.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"model catalog {source}: not valid YAML: {exc}") from exc
    return parse_catalog(document, source=str(source))


def _configured_catalog_path() -> Path:
    # The only place the catalog location is read from the environment.
    override = os.environ.get(CATALOG_PATH_ENV)
    return Path(override) if override else DEFAULT_CATALOG_PATH


def parse_catalog(document: Any, *, source: str = "<catalog>") -> Catalog:
    """Validate an already-parsed catalog document (what `catalog.yaml` holds)."""
    if not isinstance(document, Mapping):
        raise ValueError(f"model catalog {source}: the top level must be a mapping")
    unknown = set(document) - {"chat_models", "embedding_models"}
    if unknown:
        raise ValueError(f"model catalog {source}: unknown top-level keys {sorted(unknown)}")

    chat_entries = _entry_list(document, "chat_models", source)
    embedding_entries = _entry_list(document, "embedding_models", source)

    seen: set[str] = set()
    for section, entries in (
        ("chat_models", chat_entries),
        ("embedding_models", embedding_entries),
    ):
        for index, entry in enumerate(entries):
            model_id = entry.get("id")
            where = f"model catalog {source}: {section}[{index}]"
            if not isinstance(model_id, str) or not model_id.strip():
                raise ValueError(f"{where}: 'id' must be a non-empty string")
            if model_id in seen:
                raise ValueError(f"{where}: duplicate model id '{model_id}'")
            seen.add(model_id)

    chat_readers = [
        _EntryReader(entry, f"model catalog {source}: chat model '{entry['id']}'")
        for entry in chat_entries
    ]
    # Primary routes first, so string fallbacks resolve to where their target is served.
    chat_routes = {reader.text("id"): reader.own_route() for reader in chat_readers}
    chat_models = tuple(reader.chat_model(chat_routes) for reader in chat_readers)
    embedding_models = tuple(
        _EntryReader(
            entry, f"model catalog {source}: embedding model '{entry['id']}'"
        ).embedding_model()
        for entry in embedding_entries
    )
    return Catalog(chat_models=chat_models, embedding_models=embedding_models)


def _entry_list(document: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    entries = document.get(key)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"model catalog {source}: '{key}' must be a non-empty list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"model catalog {source}: {key}[{index}] must be a mapping")
    return entries


_CHAT_KEYS = frozenset(
    {
        "id",
        "provider",
        "upstream_id",
        "owned_by",
        "created",
        "input_nano_usd_per_token",
        "cached_input_nano_usd_per_token",
        "output_nano_usd_per_token",
        "context_window",
        "max_output_tokens",
        "capabilities",
        "fallbacks",
        "long_context",
        "image_input_tokens",
        "hedge_after_ms",
    }
)
_EMBEDDING_KEYS = frozenset(
    {
        "id",
        "provider",
        "upstream_id",
        "owned_by",
        "created",
        "input_nano_usd_per_token",
        "default_dimensions",
        "max_input_tokens",
        "dimensions_configurable",
    }
)
_PRICE_KEYS = (
    "input_nano_usd_per_token",
    "cached_input_nano_usd_per_token",
    "output_nano_usd_per_token",
)


class _EntryReader:
    """Typed field access on one catalog entry, with errors that name the entry and field."""

    def __init__(self, entry: Mapping[str, Any], where: str) -> None:
        self._entry = entry
        self._where = where

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self._where}: {message}")

    def reject_unknown_keys(self, allowed: frozenset[str]) -> None:
        # Unknown keys are almost always typos ("max_output_token"), which would otherwise
        # silently fall back to a default.
        unknown = set(self._entry) - allowed
        if unknown:
            raise self.fail(f"unknown fields {sorted(unknown)}")

    def text(self, key: str, entry: Mapping[str, Any] | None = None) -> str:
        value = (entry if entry is not None else self._entry).get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"'{key}' must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, *, minimum: int, entry: Mapping[str, Any] | None = None) -> int:
        value = (entry if entry is not None else self._entry).get(key)
        # bool is an int subclass; `true` as a price is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(f"'{key}' must be an integer >= {minimum}, got {value!r}")
        return value

    def flag(self, key: str, entry: Mapping[str, Any] | None = None) -> bool:
        value = (entry if entry is not None else self._entry).get(key)
        if not isinstance(value, bool):
            raise self.fail(f"'{key}' must be true or false, got {value!r}")
        return value

    def provider(self, value: Any = None) -> str:
        provider = self._entry.get("provider") if value is None else value
        if provider not in PROVIDERS:
            raise self.fail(f"unknown provider {provider!r}; expected one of {sorted(PROVIDERS)}")
        return str(provider)

    def created(self) -> int:
        value = self._entry.get("created")
        # YAML reads `2024-05-13` as a date; midnight UTC gives a stable Unix timestamp.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return calendar.timegm(value.timetuple())
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise self.fail(f"'created' must be a date (YYYY-MM-DD) or a Unix timestamp, got {value!r}")

    def prices(self, entry: Mapping[str, Any]) -> TokenPrices:
        prices = TokenPrices(*(self.integer(key, minimum=0, entry=entry) for key in _PRICE_KEYS))
        if prices.cached_input_nano_usd_per_token > prices.input_nano_usd_per_token:
            raise self.fail("the cached input price exceeds the input price")
        return prices

    def capabilities(self) -> Capabilities:
        raw = self._entry.get("capabilities")
        if not isinstance(raw, Mapping) or set(raw) != {"vision", "tools", "json"}:
            raise self.fail("'capabilities' must map exactly vision, tools and json to booleans")
        return Capabilities(
            vision=self.flag("vision", raw),
            tools=self.flag("tools", raw),
            json=self.flag("json", raw),
        )

    def long_context(self, base: TokenPrices) -> LongContextPrices | None:
        raw = self._entry.get("long_context")
        if raw is None:
            return None
        if not isinstance(raw, Mapping) or set(raw) != {"threshold_tokens", *_PRICE_KEYS}:
            raise self.fail(f"'long_context' must hold threshold_tokens and {list(_PRICE_KEYS)}")
        prices = self.prices(raw)
        if any(getattr(prices, key) < getattr(base, key) for key in _PRICE_KEYS):
            raise self.fail("long_context prices must not be below the base prices")
        return LongContextPrices(self.integer("threshold_tokens", minimum=1, entry=raw), prices)

    def own_route(self) -> Route:
        return Route(self.text("id"), self.provider(), self.text("upstream_id"))

    def fallbacks(self, routes_by_id: Mapping[str, Route]) -> tuple[Route, ...]:
        own = self.own_route()
        raw = self._entry.get("fallbacks", [])
        if not isinstance(raw, list):
            raise self.fail("'fallbacks' must be a list")
        routes: list[Route] = []
        for index, item in enumerate(raw):
            if isinstance(item, str):
                if item not in routes_by_id:
                    raise self.fail(f"fallbacks[{index}] names unknown chat model '{item}'")
                routes.append(routes_by_id[item])
            elif isinstance(item, Mapping):
                if not set(item) <= {"model", "provider", "upstream_id"}:
                    raise self.fail(
                        f"fallbacks[{index}] may only hold model, provider, upstream_id"
                    )
                target = item.get("model", own.model_id)
                if target not in routes_by_id:
                    raise self.fail(f"fallbacks[{index}] names unknown chat model '{target}'")
                provider = self.provider(item.get("provider"))
                routes.append(Route(str(target), provider, self.text("upstream_id", item)))
            else:
                raise self.fail(f"fallbacks[{index}] must be a model id or a mapping")
            if routes[-1] == own:
                raise self.fail(f"fallbacks[{index}] is the model's own route")
        if len(set(routes)) != len(routes):
            raise self.fail("'fallbacks' lists the same route twice")
        return tuple(routes)

    def chat_model(self, routes_by_id: Mapping[str, Route]) -> ChatModel:
        self.reject_unknown_keys(_CHAT_KEYS)
        model_id = self.text("id")
        prices = self.prices(self._entry)
        context_window = self.integer("context_window", minimum=1)
        max_output_tokens = self.integer("max_output_tokens", minimum=1)
        if max_output_tokens > context_window:
            raise self.fail("'max_output_tokens' exceeds 'context_window'")
        image_tokens = (
            self.integer("image_input_tokens", minimum=1)
            if "image_input_tokens" in self._entry
            else DEFAULT_IMAGE_INPUT_TOKENS
        )
        return ChatModel(
            id=model_id,
            provider=self.provider(),
            upstream_id=self.text("upstream_id"),
            owned_by=self.text("owned_by"),
            created=self.created(),
            input_nano_usd_per_token=prices.input_nano_usd_per_token,
            cached_input_nano_usd_per_token=prices.cached_input_nano_usd_per_token,
            output_nano_usd_per_token=prices.output_nano_usd_per_token,
            context_window=context_window,
            max_output_tokens=max_output_tokens,
            capabilities=self.capabilities(),
            fallbacks=self.fallbacks(routes_by_id),
            long_context=self.long_context(prices),
            image_input_tokens=image_tokens,
            hedge_after_ms=(
                self.integer("hedge_after_ms", minimum=1)
                if "hedge_after_ms" in self._entry
                else None
            ),
        )

    def embedding_model(self) -> EmbeddingModel:
        self.reject_unknown_keys(_EMBEDDING_KEYS)
        return EmbeddingModel(
            id=self.text("id"),
            provider=self.provider(),
            upstream_id=self.text("upstream_id"),
            owned_by=self.text("owned_by"),
            created=self.created(),
            input_nano_usd_per_token=self.integer("input_nano_usd_per_token", minimum=0),
            default_dimensions=self.integer("default_dimensions", minimum=1),
            max_input_tokens=self.integer("max_input_tokens", minimum=1),
            dimensions_configurable=self.flag("dimensions_configurable"),
        )
