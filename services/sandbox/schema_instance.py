"""Build a plausible instance of a JSON Schema (or Gemini's OpenAPI subset).

Used for tool-call arguments and structured output. The instance depends only on the
schema and `seed`, so the same request always gets the same answer. Supports type
(also upper-case OpenAPI names and type lists), enum, const, properties/required,
items/minItems/maxItems, string formats and length bounds, numeric bounds,
anyOf/oneOf/allOf, nullable, snake_case keywords and local `$ref`s to
`$defs`/`definitions`.
"""

from __future__ import annotations

import hashlib
from typing import Any

_MAX_DEPTH = 8

_STRING_BY_NAME = {
    "city": "Paris",
    "location": "Paris, France",
    "country": "France",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "url": "https://example.com",
    "query": "sandbox query",
    "unit": "celsius",
    "language": "en",
    "currency": "USD",
    "date": "2025-01-31",
}

_STRING_BY_FORMAT = {
    "date-time": "2025-01-31T12:00:00Z",
    "date": "2025-01-31",
    "time": "12:00:00",
    "email": "ada@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def instance_for(schema: Any, seed: str = "") -> Any:
    """Return a value that validates against `schema`."""
    root = schema if isinstance(schema, dict) else {}
    return _Builder(root, seed).build(root, "value", 0)


class _Builder:
    def __init__(self, root: dict[str, Any], seed: str) -> None:
        self._root = root
        self._seed = seed

    def build(self, schema: Any, name: str, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None if depth > _MAX_DEPTH else self._string(name, {})
        schema = _camel_keys(self._resolve(schema))
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        if "default" in schema and schema["default"] is not None:
            return schema["default"]
        for keyword in ("anyOf", "oneOf"):
            branches = schema.get(keyword)
            if isinstance(branches, list) and branches:
                return self.build(_first_non_null(branches), name, depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.build(_merge_all_of(schema), name, depth + 1)

        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return int(_number(schema, 1))
        if kind == "number":
            return float(_number(schema, 1.5))
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(name, schema)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < _MAX_DEPTH:
            reference = schema["$ref"]
            target: Any = self._root
            if reference.startswith("#"):
                for part in reference.lstrip("#").strip("/").split("/"):
                    if part and isinstance(target, dict):
                        target = target.get(part.replace("~1", "/").replace("~0", "~"))
            schema = target if isinstance(target, dict) else {}
            seen += 1
        return schema

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        required = schema.get("required")
        names = required if isinstance(required, list) and required else list(properties)
        return {
            name: self.build(properties.get(name, {}), name, depth + 1)
            for name in names
            if isinstance(name, str)
        }

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = _as_int(schema.get("minItems"), 1)
        high = _as_int(schema.get("maxItems"), max(low, 1))
        count = max(0, min(max(low, 1), high))
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [self.build(item, name, depth + 1) for item in prefix]
        items = schema.get("items", {})
        return [self.build(items, f"{name}{index}", depth + 1) for index in range(count)]

    def _string(self, name: str, schema: dict[str, Any]) -> str:
        text = _STRING_BY_FORMAT.get(str(schema.get("format", "")))
        if text is None:
            text = _STRING_BY_NAME.get(name.lower())
        if text is None:
            digest = hashlib.blake2s(f"{self._seed}|{name}".encode(), digest_size=3).hexdigest()
            text = f"{name}-{digest}"
        low = _as_int(schema.get("minLength"), 0)
        high = _as_int(schema.get("maxLength"), 0)
        if len(text) < low:
            text = text + "x" * (low - len(text))
        if high and len(text) > high:
            text = text[:high]
        return text


def _camel_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """google-genai sends schema keywords in snake_case (`min_items`); accept both."""
    if not any("_" in key for key in schema):
        return schema
    return {_camel(key): value for key, value in schema.items()}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _type_of(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [str(item).lower() for item in declared if str(item).lower() != "null"]
        declared = non_null[0] if non_null else "null"
    if isinstance(declared, str):
        return declared.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _number(schema: dict[str, Any], fallback: float) -> float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value = fallback
    if isinstance(low, int | float) and not isinstance(low, bool):
        value = max(value, low + (1 if "exclusiveMinimum" in schema else 0))
    if isinstance(high, int | float) and not isinstance(high, bool):
        value = min(value, high - (1 if "exclusiveMaximum" in schema else 0))
    return value


def _as_int(value: Any, fallback: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return fallback


def _first_non_null(branches: list[Any]) -> Any:
    for branch in branches:
        if isinstance(branch, dict) and str(branch.get("type", "")).lower() != "null":
            return branch
    return branches[0]


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[Any] = list(merged.get("required") or [])
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        properties.update(part.get("properties") or {})
        required.extend(part.get("required") or [])
        for key, value in part.items():
            merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
        merged.setdefault("type", "object")
    if required:
        merged["required"] = required
    return merged
