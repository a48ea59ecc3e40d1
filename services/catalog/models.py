"""The model catalog: which public model ids exist, where each is served and what it costs.

The data lives in `catalog.yaml` next to this module (operators may point
`AIG_CATALOG_PATH` at their own copy). It holds three lists: `providers` (instances of a
provider type: where to send calls and with which key), `chat_models` and
`embedding_models`. It is validated completely on load, so a typo in a price or a dangling
fallback stops a start (or is refused by a reload) instead of mis-billing later.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aig_common.errors import APIError, model_not_found
from aig_common.usage import TokenUsage

CATALOG_PATH_ENV = "AIG_CATALOG_PATH"
DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

# Worst-case prompt tokens one image may cost when the catalog says nothing more precise.
# It covers OpenAI's tile and patch schemes (≤ ~3,800 for gpt-4.1-nano) and Claude (~1,600).
DEFAULT_IMAGE_INPUT_TOKENS = 4000


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """One provider instance, as the catalog declares it: pure data, no behaviour.

    `type` names the code that speaks its API (the router's provider types); `name` is what
    routes, usage events and `x-aig-provider` call it. Several instances may share a type
    (vLLM, Ollama, Groq and DeepSeek's own API are all `openai`).
    """

    name: str
    type: str
    base_url: str
    # The environment variable holding the API key; None for a server that needs none.
    key_env: str | None
    headers: tuple[tuple[str, str], ...] = ()
    # Seconds the provider may stay silent mid-answer; None keeps the router's default.
    timeout_s: float | None = None
    # Where the sandbox simulates this provider, used when `key_env` is set but empty.
    sandbox_path: str | None = None
    # Azure OpenAI's `api-version` query parameter; other types refuse it.
    api_version: str | None = None
    # The environment variable that overrides base_url (default AIG_<NAME>_BASE_URL).
    base_url_env: str | None = None
    # The server also has OpenAI's Responses API (`/responses`), so /v1/responses calls
    # are passed through to it; most OpenAI-compatible servers have only chat. `openai`
    # type only.
    responses_api: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    vision: bool
    tools: bool
    json: bool
    # Accepts chat's `reasoning_effort` (OpenAI's o-series and GPT-5 family); the Responses
    # ingress passes `reasoning.effort` on only to such models and drops it for the others.
    reasoning: bool = False


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
    # Writing a prompt token to the provider's prompt cache, for entries that live 5 minutes
    # and 1 hour (Anthropic: 1.25x and 2x the input price). None where a write costs what
    # input costs (OpenAI and Gemini cache on their own and charge nothing extra).
    cache_write_nano_usd_per_token: int | None = None
    cache_write_1h_nano_usd_per_token: int | None = None

    @property
    def cache_write(self) -> int:
        written = self.cache_write_nano_usd_per_token
        return self.input_nano_usd_per_token if written is None else written

    @property
    def cache_write_1h(self) -> int:
        written = self.cache_write_1h_nano_usd_per_token
        return self.input_nano_usd_per_token if written is None else written

    @property
    def highest_prompt_price(self) -> int:
        """What one prompt token can cost at most: the bound a reservation must use."""
        return max(self.input_nano_usd_per_token, self.cache_write, self.cache_write_1h)


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
    # Other ids clients may pass for this model (dated snapshots, OpenRouter-style names);
    # they resolve to `id`, which answers, usage and billing report.
    aliases: tuple[str, ...] = ()
    # Prompt-cache write prices (TokenPrices.cache_write_*); None: the input price.
    cache_write_nano_usd_per_token: int | None = None
    cache_write_1h_nano_usd_per_token: int | None = None
    # Built once: every call asks for its model's route and prices, on the edge and the
    # router alike, and a frozen dataclass costs about a microsecond to build.
    _route: Route = field(init=False, repr=False, compare=False)
    _prices: TokenPrices = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_route", Route(self.id, self.provider, self.upstream_id))
        prices = TokenPrices(
            self.input_nano_usd_per_token,
            self.cached_input_nano_usd_per_token,
            self.output_nano_usd_per_token,
            self.cache_write_nano_usd_per_token,
            self.cache_write_1h_nano_usd_per_token,
        )
        object.__setattr__(self, "_prices", prices)

    @property
    def route(self) -> Route:
        return self._route

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return ("text", "image") if self.capabilities.vision else ("text",)

    def prices_for_prompt(self, prompt_tokens: int) -> TokenPrices:
        if self.long_context is not None and prompt_tokens > self.long_context.threshold_tokens:
            return self.long_context.prices
        return self._prices

    def price_nano_usd(self, usage: TokenUsage) -> int:
        """Upstream cost of a finished call.

        The prompt splits into tokens read from the provider's cache, tokens written to it
        (5-minute and 1-hour entries) and the rest, each at its own price. `completion_tokens`
        already includes reasoning tokens (OpenAI's convention, which every adapter follows),
        so they are not added again.
        """
        # Clamp: a provider reporting more cached or written than prompt tokens must not
        # yield a discount larger than the prompt, and negative counts are never billable.
        prompt = max(usage.prompt_tokens, 0)
        cached = min(max(usage.cached_prompt_tokens, 0), prompt)
        written = min(max(usage.cache_write_prompt_tokens, 0), prompt - cached)
        written_1h = min(max(usage.cache_write_1h_prompt_tokens, 0), prompt - cached - written)
        completion = max(usage.completion_tokens, 0)
        prices = self.prices_for_prompt(prompt)
        return (
            (prompt - cached - written - written_1h) * prices.input_nano_usd_per_token
            + cached * prices.cached_input_nano_usd_per_token
            + written * prices.cache_write
            + written_1h * prices.cache_write_1h
            + completion * prices.output_nano_usd_per_token
        )

    def worst_case_cost_nano_usd(self, prompt_tokens_estimate: int, max_output: int) -> int:
        """An upper bound for reservations: no cache discount, every prompt token at its
        highest price (a cache write, where writes cost more), every output token used."""
        prompt = max(prompt_tokens_estimate, 0)
        prices = self.prices_for_prompt(prompt)
        return (
            prompt * prices.highest_prompt_price
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
    aliases: tuple[str, ...] = ()

    @property
    def route(self) -> Route:
        return Route(self.id, self.provider, self.upstream_id)

    def price_nano_usd(self, usage: TokenUsage) -> int:
        return max(usage.prompt_tokens, 0) * self.input_nano_usd_per_token

    def worst_case_cost_nano_usd(self, prompt_tokens_estimate: int) -> int:
        return max(prompt_tokens_estimate, 0) * self.input_nano_usd_per_token


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One member of a call's route chain: the route and the catalog model it bills as."""

    route: Route
    model: ChatModel


@dataclass(frozen=True, slots=True)
class Catalog:
    chat_models: tuple[ChatModel, ...]
    embedding_models: tuple[EmbeddingModel, ...]
    providers: tuple[ProviderRow, ...] = ()
    _chat_by_id: dict[str, ChatModel] = field(init=False, repr=False, compare=False)
    _embedding_by_id: dict[str, EmbeddingModel] = field(init=False, repr=False, compare=False)
    # Each model's chain with its catalog fallbacks, which is what most calls ask for: built
    # on first use rather than per call (routes hashed, links made) on the edge and router.
    _chains: dict[str, tuple[ChatModel, tuple[ChainLink, ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        chat = {alias: m for m in self.chat_models for alias in (m.id, *m.aliases)}
        embedding = {alias: m for m in self.embedding_models for alias in (m.id, *m.aliases)}
        object.__setattr__(self, "_chat_by_id", chat)
        object.__setattr__(self, "_embedding_by_id", embedding)
        object.__setattr__(self, "_chains", {})

    def chat(self, model_id: str) -> ChatModel | None:
        """The chat model `model_id` names, by its id or any alias."""
        return self._chat_by_id.get(model_id)

    def embedding(self, model_id: str) -> EmbeddingModel | None:
        return self._embedding_by_id.get(model_id)

    def provider(self, name: str) -> ProviderRow | None:
        return next((row for row in self.providers if row.name == name), None)

    def chain(self, model: ChatModel, fallbacks: FallbackOption = True) -> list[ChainLink]:
        """The routes a call to `model` may be served by, in the order they are tried.

        The model's own route, then its catalog fallbacks (`fallbacks=True`), none
        (`False`), or the models a request names instead (a list of ids). The edge
        reserves the dearest member; the router tries them in order. An unknown id in the
        list raises UnknownFallback.
        """
        if fallbacks is True:
            known = self._chains.get(model.id)
            if known is None or known[0] is not model:  # a model of another catalog version
                known = self._chains[model.id] = (model, tuple(self._chain(model, True)))
            return list(known[1])
        return self._chain(model, fallbacks)

    def _chain(self, model: ChatModel, fallbacks: FallbackOption) -> list[ChainLink]:
        routes: list[Route] = [model.route]
        if fallbacks is True:
            routes.extend(model.fallbacks)
        elif isinstance(fallbacks, list):
            for index, model_id in enumerate(fallbacks):
                named = self.chat(model_id)
                if named is None:
                    raise UnknownFallback(index, model_id)
                routes.append(named.route)
        links: list[ChainLink] = []
        for route in dict.fromkeys(routes):
            billed = self.chat(route.model_id)
            if billed is not None:
                links.append(ChainLink(route, billed))
        return links

    def all_models(self) -> Iterator[ChatModel | EmbeddingModel]:
        yield from self.chat_models
        yield from self.embedding_models

    def model_object(self, model_id: str) -> dict[str, Any] | None:
        """One `/v1/models/{id}` object (an alias answers as itself), or None."""
        model = self.chat(model_id) or self.embedding(model_id)
        return _model_object(model, model_id) if model is not None else None

    def openai_models_list(self) -> dict[str, Any]:
        """The `/v1/models` body: every id a client may pass, aliases after their model."""
        return {
            "object": "list",
            "data": [
                _model_object(model, model_id)
                for model in self.all_models()
                for model_id in (model.id, *model.aliases)
            ],
        }


FallbackOption = bool | list[str]


class UnknownFallback(Exception):
    """A request's `aig.fallbacks` names a model the catalog does not have."""

    def __init__(self, index: int, model_id: str) -> None:
        super().__init__(f"aig.fallbacks[{index}] names unknown model `{model_id}`")
        self.index = index
        self.model_id = model_id


class InvalidOption(ValueError):
    """A malformed `aig` request option; `param` names it as OpenAI errors do."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def fallback_option(body: Mapping[str, Any]) -> FallbackOption:
    """The request's `aig.fallbacks` (true by default); InvalidOption says what is wrong."""
    options = body.get("aig")
    if options is None:
        return True
    if not isinstance(options, Mapping):
        raise InvalidOption("'aig' must be an object.", "aig")
    choice = options.get("fallbacks", True)
    if isinstance(choice, bool):
        return choice
    if isinstance(choice, list) and all(isinstance(item, str) for item in choice):
        return list(choice)
    raise InvalidOption(
        "'aig.fallbacks' must be true, false or a list of model ids.", "aig.fallbacks"
    )


def request_chain(catalog: Catalog, model: ChatModel, body: Mapping[str, Any]) -> list[ChainLink]:
    """`catalog.chain` for a request body's `aig.fallbacks`, with errors in OpenAI's shape:
    what both the edge (to reserve) and the router (to route) call."""
    try:
        return catalog.chain(model, fallback_option(body))
    except InvalidOption as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_type") from None
    except UnknownFallback as exc:
        raise model_not_found(
            exc.model_id, param=f"aig.fallbacks[{exc.index}]", status=400
        ) from None


def _usd_per_million(nano_usd_per_token: int) -> str:
    # nano-USD per token x 1e6 tokens / 1e9 = USD per million tokens, exactly.
    whole, rest = divmod(nano_usd_per_token, 1000)
    return f"{whole}.{rest:03d}".rstrip("0").rstrip(".") if rest else str(whole)


def _model_object(model: ChatModel | EmbeddingModel, model_id: str) -> dict[str, Any]:
    """OpenAI's model object plus an `aig` field the SDKs keep (they allow extra fields)."""
    details: dict[str, Any] = {"canonical_id": model.id}
    if isinstance(model, ChatModel):
        pricing: dict[str, Any] = {
            "input_usd_per_million_tokens": _usd_per_million(model.input_nano_usd_per_token),
            "cached_input_usd_per_million_tokens": _usd_per_million(
                model.cached_input_nano_usd_per_token
            ),
            "output_usd_per_million_tokens": _usd_per_million(model.output_nano_usd_per_token),
        }
        if model.cache_write_nano_usd_per_token is not None:
            pricing["cache_write_usd_per_million_tokens"] = _usd_per_million(
                model.cache_write_nano_usd_per_token
            )
        if model.cache_write_1h_nano_usd_per_token is not None:
            pricing["cache_write_1h_usd_per_million_tokens"] = _usd_per_million(
                model.cache_write_1h_nano_usd_per_token
            )
        if model.long_context is not None:
            tier = model.long_context.prices
            pricing["long_context"] = {
                "above_prompt_tokens": model.long_context.threshold_tokens,
                "input_usd_per_million_tokens": _usd_per_million(tier.input_nano_usd_per_token),
                "output_usd_per_million_tokens": _usd_per_million(tier.output_nano_usd_per_token),
            }
        details.update(
            type="chat",
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            modalities={"input": list(model.input_modalities), "output": ["text"]},
            capabilities={
                "vision": model.capabilities.vision,
                "tools": model.capabilities.tools,
                "json": model.capabilities.json,
                "reasoning": model.capabilities.reasoning,
            },
            pricing=pricing,
        )
    else:
        details.update(
            type="embedding",
            context_window=model.max_input_tokens,
            dimensions=model.default_dimensions,
            modalities={"input": ["text"], "output": ["embedding"]},
            pricing={
                "input_usd_per_million_tokens": _usd_per_million(model.input_nano_usd_per_token)
            },
        )
    return {
        "id": model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "aig": details,
    }


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate the catalog; any defect raises ValueError naming the entry."""
    source = path if path is not None else configured_catalog_path()
    text = source.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"model catalog {source}: not valid YAML: {exc}") from exc
    return parse_catalog(document, source=str(source))


def configured_catalog_path() -> Path:
    # The only place the catalog location is read from the environment.
    override = os.environ.get(CATALOG_PATH_ENV)
    return Path(override) if override else DEFAULT_CATALOG_PATH


def parse_catalog(document: Any, *, source: str = "<catalog>") -> Catalog:
    """Validate an already-parsed catalog document (what `catalog.yaml` holds)."""
    if not isinstance(document, Mapping):
        raise ValueError(f"model catalog {source}: the top level must be a mapping")
    unknown = set(document) - {"providers", "chat_models", "embedding_models"}
    if unknown:
        raise ValueError(f"model catalog {source}: unknown top-level keys {sorted(unknown)}")

    providers = _providers(document, source)
    provider_names = frozenset(row.name for row in providers)
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
            aliases = entry.get("aliases", [])
            if not isinstance(aliases, list) or not all(
                isinstance(alias, str) and alias.strip() for alias in aliases
            ):
                raise ValueError(f"{where}: 'aliases' must be a list of non-empty strings")
            # An alias shares the id namespace: a client's string must name one model.
            for name in (model_id, *aliases):
                if name in seen:
                    raise ValueError(f"{where}: duplicate model id or alias '{name}'")
                seen.add(name)

    chat_readers = [
        _EntryReader(entry, f"model catalog {source}: chat model '{entry['id']}'", provider_names)
        for entry in chat_entries
    ]
    # Primary routes first, so string fallbacks resolve to where their target is served.
    chat_routes = {reader.text("id"): reader.own_route() for reader in chat_readers}
    for reader in chat_readers:
        for alias in reader.aliases():
            chat_routes[alias] = chat_routes[reader.text("id")]
    chat_models = tuple(reader.chat_model(chat_routes) for reader in chat_readers)
    embedding_models = tuple(
        _EntryReader(
            entry, f"model catalog {source}: embedding model '{entry['id']}'", provider_names
        ).embedding_model()
        for entry in embedding_entries
    )
    return Catalog(chat_models=chat_models, embedding_models=embedding_models, providers=providers)


_PROVIDER_KEYS = frozenset(
    {
        "name",
        "type",
        "base_url",
        "key_env",
        "headers",
        "timeout",
        "sandbox_path",
        "api_version",
        "base_url_env",
        "responses_api",
    }
)


def _providers(document: Mapping[str, Any], source: str) -> tuple[ProviderRow, ...]:
    rows: list[ProviderRow] = []
    for index, entry in enumerate(_entry_list(document, "providers", source)):
        name = entry.get("name")
        where = f"model catalog {source}: provider '{name}'"
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model catalog {source}: providers[{index}]: 'name' is required")
        if any(row.name == name for row in rows):
            raise ValueError(f"{where}: declared twice")
        unknown = set(entry) - _PROVIDER_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        for key in ("type", "base_url"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"{where}: '{key}' must be a non-empty string")
        if not entry["base_url"].startswith(("http://", "https://")):
            raise ValueError(f"{where}: 'base_url' must be an http(s) URL")
        for key in ("key_env", "sandbox_path", "api_version", "base_url_env"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f"{where}: '{key}' must be a string")
        headers = entry.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError(f"{where}: 'headers' must map header names to strings")
        if not isinstance(entry.get("responses_api", False), bool):
            raise ValueError(f"{where}: 'responses_api' must be true or false")
        timeout = entry.get("timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValueError(f"{where}: 'timeout' must be a positive number of seconds")
        rows.append(
            ProviderRow(
                name=name,
                type=entry["type"],
                base_url=entry["base_url"].rstrip("/"),
                key_env=entry.get("key_env"),
                headers=tuple(sorted(headers.items())),
                timeout_s=float(timeout) if timeout is not None else None,
                sandbox_path=entry.get("sandbox_path"),
                api_version=entry.get("api_version"),
                base_url_env=entry.get("base_url_env"),
                responses_api=entry.get("responses_api", False),
            )
        )
    return tuple(rows)


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
        "aliases",
        "cache_write_nano_usd_per_token",
        "cache_write_1h_nano_usd_per_token",
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
        "aliases",
    }
)
_PRICE_KEYS = (
    "input_nano_usd_per_token",
    "cached_input_nano_usd_per_token",
    "output_nano_usd_per_token",
)
# Optional: a model whose provider charges extra for prompt-cache writes names both.
_CACHE_WRITE_KEYS = ("cache_write_nano_usd_per_token", "cache_write_1h_nano_usd_per_token")


class _EntryReader:
    """Typed field access on one catalog entry, with errors that name the entry and field."""

    def __init__(self, entry: Mapping[str, Any], where: str, providers: frozenset[str]) -> None:
        self._entry = entry
        self._where = where
        self._providers = providers

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
        if provider not in self._providers:
            raise self.fail(
                f"unknown provider {provider!r}; the catalog declares {sorted(self._providers)}"
            )
        return str(provider)

    def aliases(self) -> tuple[str, ...]:
        return tuple(self._entry.get("aliases", ()))

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
        writes = [key for key in _CACHE_WRITE_KEYS if key in entry]
        if not writes:
            return prices
        if len(writes) != len(_CACHE_WRITE_KEYS):
            raise self.fail(f"cache write prices come as a pair: {list(_CACHE_WRITE_KEYS)}")
        written, written_1h = (self.integer(key, minimum=0, entry=entry) for key in writes)
        if min(written, written_1h) < prices.input_nano_usd_per_token:
            raise self.fail("a cache write price is below the input price")
        return dataclasses.replace(
            prices,
            cache_write_nano_usd_per_token=written,
            cache_write_1h_nano_usd_per_token=written_1h,
        )

    def capabilities(self) -> Capabilities:
        raw = self._entry.get("capabilities")
        if not isinstance(raw, Mapping) or set(raw) - {"reasoning"} != {"vision", "tools", "json"}:
            raise self.fail(
                "'capabilities' must map exactly vision, tools, json and optionally reasoning "
                "to booleans"
            )
        return Capabilities(
            vision=self.flag("vision", raw),
            tools=self.flag("tools", raw),
            json=self.flag("json", raw),
            reasoning=self.flag("reasoning", raw) if "reasoning" in raw else False,
        )

    def long_context(self, base: TokenPrices) -> LongContextPrices | None:
        raw = self._entry.get("long_context")
        if raw is None:
            return None
        if not isinstance(raw, Mapping) or set(raw) - set(_CACHE_WRITE_KEYS) != {
            "threshold_tokens",
            *_PRICE_KEYS,
        }:
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
                routes.append(
                    Route(routes_by_id[target].model_id, provider, self.text("upstream_id", item))
                )
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
            cache_write_nano_usd_per_token=prices.cache_write_nano_usd_per_token,
            cache_write_1h_nano_usd_per_token=prices.cache_write_1h_nano_usd_per_token,
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
            aliases=self.aliases(),
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
            aliases=self.aliases(),
        )
