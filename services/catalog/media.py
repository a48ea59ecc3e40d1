"""The media catalog: image, video, music and voice models sold through /v1/jobs, as data.

The data lives in `media.yaml` next to this module (`AIG_MEDIA_CATALOG_PATH` points at an
operator's copy). Each model has a modality, the provider route(s) that render it, a unit
(image, megapixel, second, track, 1,000 characters) with an integer nano-USD price per
unit, a JSON Schema for its createTask `input`, and a render deadline. Provider *instances*
(`{name, type, base_url, key_env}`) are rows of the same file; an instance whose key is not
set is served by the sandbox simulator, as chat providers are.

Money: the cost of a task is unit price x units, where the units follow from the input
(how many images, how many seconds, how many characters), so the worst case reserved at
createTask is exactly what a success bills, unless the provider reports fewer units.
Everything is validated on load, so a typo stops the service instead of mis-billing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

MEDIA_CATALOG_PATH_ENV = "AIG_MEDIA_CATALOG_PATH"
DEFAULT_MEDIA_CATALOG_PATH = Path(__file__).with_name("media.yaml")
SANDBOX_URL_ENV = "AIG_SANDBOX_URL"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8090"

MODALITIES = frozenset({"image", "video", "audio"})
# What one unit is; the `units` rule of a model says how many the input asks for.
UNITS = frozenset({"image", "megapixel", "second", "track", "1k_characters"})
PROVIDER_TYPES = frozenset({"fal", "replicate", "openai_images"})
# One megapixel is 1024 x 1024 pixels, as fal bills them; each image is rounded up.
PIXELS_PER_MEGAPIXEL = 1024 * 1024
CHARACTERS_PER_UNIT = 1000


class InputRejected(ValueError):
    """The createTask input does not match the model's schema; `field` names where."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class MediaProviderInstance:
    """One configured media provider: which protocol (`type`), where, with which key."""

    name: str
    type: str
    base_url: str
    key_env: str
    api_key: str
    sandboxed: bool  # no key set: the sandbox simulator stands in


@dataclass(frozen=True, slots=True)
class MediaRoute:
    provider: str  # a provider instance name
    upstream_id: str  # the model as that provider names it


@dataclass(frozen=True, slots=True)
class UnitRule:
    """How many units an input asks for.

    `field` is the input property that sets the amount (num_images, duration, text,
    image_size); `default` applies when the input leaves it out; `count_field` multiplies
    (several images of a size); `fixed` is a constant (Suno always renders two tracks).
    """

    field: str = ""
    default: int = 1
    count_field: str = ""
    fixed: int = 0
    sizes: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaModel:
    id: str
    modality: str
    owned_by: str
    created: int
    unit: str
    unit_price_nano_usd: int
    # A unit price that depends on one input value (resolution, quality, audio on/off).
    price_field: str
    prices_by_value: Mapping[str, int]
    unit_rule: UnitRule
    routes: tuple[MediaRoute, ...]
    deadline_s: int
    input_schema: Mapping[str, Any]
    description: str = ""

    def validate_input(self, value: Any) -> dict[str, Any]:
        """Returns the input when it matches the schema; raises `InputRejected` naming the
        first offending field (`input.duration`), the most specific error first."""
        if not isinstance(value, dict):
            raise InputRejected("'input' must be a JSON object", "input")
        validator = jsonschema.Draft202012Validator(self.input_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            raise InputRejected(_describe(error), _field_of(error))
        return value

    def unit_price_for(self, task_input: Mapping[str, Any]) -> int:
        if self.price_field:
            chosen = task_input.get(self.price_field, self._schema_default(self.price_field))
            price = self.prices_by_value.get(_value_key(chosen))
            if price is not None:
                return price
        return self.unit_price_nano_usd

    def units_for(self, task_input: Mapping[str, Any]) -> int:
        """The units a (validated) input asks for; what createTask reserves and success bills."""
        rule = self.unit_rule
        if rule.fixed:
            return rule.fixed
        count = 1
        if rule.count_field:
            count = int(task_input.get(rule.count_field, self._schema_default(rule.count_field, 1)))
        if self.unit == "1k_characters":
            text = str(task_input.get(rule.field, ""))
            return max(1, math.ceil(len(text) / CHARACTERS_PER_UNIT)) * count
        if self.unit == "megapixel":
            width, height = self._size(task_input)
            return max(1, math.ceil(width * height / PIXELS_PER_MEGAPIXEL)) * count
        amount = task_input.get(rule.field, self._schema_default(rule.field, rule.default))
        return max(1, _as_int(amount)) * count

    def cost_nano_usd(self, task_input: Mapping[str, Any], units: int | None = None) -> int:
        """Upstream cost (before markup) of `units`, or of what the input asks for."""
        count = self.units_for(task_input) if units is None else units
        return self.unit_price_for(task_input) * count

    def _size(self, task_input: Mapping[str, Any]) -> tuple[int, int]:
        rule = self.unit_rule
        chosen = task_input.get(rule.field, self._schema_default(rule.field))
        if isinstance(chosen, dict):
            return int(chosen["width"]), int(chosen["height"])
        return rule.sizes[str(chosen)]

    def _schema_default(self, name: str, fallback: Any = None) -> Any:
        prop = self.input_schema.get("properties", {}).get(name, {})
        return prop.get("default", fallback)

    def model_object(self) -> dict[str, Any]:
        """The /v1/models entry: OpenAI's fields plus what a media client needs."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "modality": self.modality,
            "endpoint": "/v1/jobs/createTask",
            "pricing": {
                "unit": self.unit,
                "unit_price_usd": _usd_text(self.unit_price_nano_usd),
                **(
                    {
                        "by": self.price_field,
                        "unit_prices_usd": {
                            value: _usd_text(price) for value, price in self.prices_by_value.items()
                        },
                    }
                    if self.price_field
                    else {}
                ),
            },
            "input_schema": dict(self.input_schema),
        }


@dataclass(frozen=True)
class MediaCatalog:
    models: Mapping[str, MediaModel]
    providers: Mapping[str, MediaProviderInstance]

    def model(self, model_id: str) -> MediaModel | None:
        return self.models.get(model_id)

    def __iter__(self) -> Iterator[MediaModel]:
        return iter(self.models.values())

    def model_objects(self) -> list[dict[str, Any]]:
        return [model.model_object() for model in self.models.values()]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _usd_text(nano: int) -> str:
    from aig_common.money import usd

    return usd(nano)


def _value_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return math.ceil(value)
    text = str(value).strip().removesuffix("s")  # "8s", as some providers spell durations
    return math.ceil(float(text))


def _field_of(error: ValidationError) -> str:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        # "'prompt' is a required property": the missing property is the field.
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path.append(missing)
    elif error.validator == "additionalProperties" and "'" in error.message:
        path.append(error.message.split("'")[1])
    return ".".join(["input", *[part for part in path if part]])


def _describe(error: ValidationError) -> str:
    where = _field_of(error)
    if error.validator == "required":
        return f"'{where}' is required"
    if error.validator == "additionalProperties":
        return f"'{where}' is not a parameter of this model"
    return f"'{where}' is invalid: {error.message}"


# -- loading ---------------------------------------------------------------------------


def load_media_catalog(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> MediaCatalog:
    environ = os.environ if env is None else env
    source = path or Path(environ.get(MEDIA_CATALOG_PATH_ENV) or DEFAULT_MEDIA_CATALOG_PATH)
    return parse_media_catalog(yaml.safe_load(source.read_text()), environ, source=str(source))


def parse_media_catalog(
    document: Any, env: Mapping[str, str], *, source: str = "<media catalog>"
) -> MediaCatalog:
    if not isinstance(document, dict):
        raise ValueError(f"{source}: expected a mapping with 'providers' and 'media_models'")
    sandbox_url = env.get(SANDBOX_URL_ENV, DEFAULT_SANDBOX_URL).rstrip("/")
    providers: dict[str, MediaProviderInstance] = {}
    for entry in document.get("providers") or []:
        instance = _provider(entry, env, sandbox_url, source)
        if instance.name in providers:
            raise ValueError(f"{source}: provider {instance.name!r} is defined twice")
        providers[instance.name] = instance
    models: dict[str, MediaModel] = {}
    for entry in document.get("media_models") or []:
        model = _model(entry, providers, source)
        if model.id in models:
            raise ValueError(f"{source}: media model {model.id!r} is defined twice")
        models[model.id] = model
    return MediaCatalog(models, providers)


def _provider(
    entry: Mapping[str, Any], env: Mapping[str, str], sandbox_url: str, source: str
) -> MediaProviderInstance:
    name = str(entry["name"])
    kind = str(entry["type"])
    if kind not in PROVIDER_TYPES:
        raise ValueError(f"{source}: provider {name!r} has unknown type {kind!r}")
    key_env = str(entry["key_env"])
    key = env.get(key_env, "")
    sandboxed = not key
    default_url = sandbox_url + str(entry["sandbox_path"]) if sandboxed else str(entry["base_url"])
    url_env = str(entry.get("base_url_env", ""))
    base_url = (env.get(url_env) if url_env else None) or default_url
    return MediaProviderInstance(
        name=name,
        type=kind,
        base_url=base_url.rstrip("/"),
        key_env=key_env,
        api_key=key or "sandbox-key",
        sandboxed=sandboxed,
    )


_MODEL_KEYS = frozenset(
    {
        "id",
        "modality",
        "owned_by",
        "created",
        "unit",
        "unit_price_nano_usd",
        "unit_price_by",
        "units",
        "routes",
        "deadline_s",
        "input_schema",
        "description",
    }
)


def _model(
    entry: Mapping[str, Any], providers: Mapping[str, MediaProviderInstance], source: str
) -> MediaModel:
    model_id = str(entry.get("id", ""))
    where = f"{source}: media model {model_id!r}"
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if entry["modality"] not in MODALITIES:
        raise ValueError(f"{where}: modality must be one of {sorted(MODALITIES)}")
    if entry["unit"] not in UNITS:
        raise ValueError(f"{where}: unit must be one of {sorted(UNITS)}")
    price = entry["unit_price_nano_usd"]
    if not _positive_int(price):
        raise ValueError(f"{where}: unit_price_nano_usd must be a positive integer")
    by = entry.get("unit_price_by") or {}
    prices_by_value = {_value_key(k): v for k, v in (by.get("prices") or {}).items()}
    if any(not _positive_int(v) for v in prices_by_value.values()):
        raise ValueError(f"{where}: unit_price_by prices must be positive integers")
    routes = tuple(
        MediaRoute(str(route["provider"]), str(route["upstream_id"]))
        for route in entry.get("routes") or []
    )
    if not routes:
        raise ValueError(f"{where}: needs at least one route")
    for route in routes:
        if route.provider not in providers:
            raise ValueError(f"{where}: route names unknown provider {route.provider!r}")
    schema = entry["input_schema"]
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        raise ValueError(f"{where}: input_schema is not JSON Schema: {error.message}") from None
    rules = entry.get("units") or {}
    sizes = {str(k): (int(v[0]), int(v[1])) for k, v in (rules.get("sizes") or {}).items()}
    rule = UnitRule(
        field=str(rules.get("field", "")),
        default=int(rules.get("default", 1)),
        count_field=str(rules.get("count_field", "")),
        fixed=int(rules.get("fixed", 0)),
        sizes=sizes,
    )
    deadline = entry["deadline_s"]
    if not isinstance(deadline, int) or deadline <= 0:
        raise ValueError(f"{where}: deadline_s must be a positive integer")
    created = entry.get("created", 0)
    if hasattr(created, "timetuple"):
        import calendar

        created = calendar.timegm(created.timetuple())
    return MediaModel(
        id=model_id,
        modality=str(entry["modality"]),
        owned_by=str(entry.get("owned_by", "aig")),
        created=int(created),
        unit=str(entry["unit"]),
        unit_price_nano_usd=price,
        price_field=str(by.get("field", "")),
        prices_by_value=prices_by_value,
        unit_rule=rule,
        routes=routes,
        deadline_s=deadline,
        input_schema=schema,
        description=str(entry.get("description", "")),
    )
