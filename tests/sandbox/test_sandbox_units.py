"""Pure functions: schema instances, settings from env, deterministic content."""

from __future__ import annotations

import base64
import struct
from typing import Any

import jsonschema
import pytest

from sandbox.dialogue import Prompt, ToolSpec, reply_to
from sandbox.schema_instance import instance_for
from sandbox.settings import SandboxSettings
from sandbox.synth import embedding, embedding_base64, split_text

SCHEMAS: list[dict[str, Any]] = [
    {"type": "string", "minLength": 40},
    {"type": "string", "maxLength": 2},
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": 10, "maximum": 20},
    {"type": "number", "exclusiveMinimum": 5},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
    {"type": ["null", "boolean"]},
    {"const": "fixed"},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"a": {"type": "integer"}}}]},
    {
        "type": "object",
        "properties": {"child": {"$ref": "#/$defs/node"}},
        "required": ["child"],
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"enum": ["x", "y"]}},
                },
                "required": ["name", "tags"],
                "additionalProperties": False,
            }
        },
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_instance_validates(schema: dict[str, Any]) -> None:
    jsonschema.validate(instance_for(schema, "seed"), schema)


def test_openapi_upper_case_types_and_snake_case_keywords() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "count": {"type": "INTEGER"},
            "names": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 2},
        },
        "required": ["count", "names"],
    }
    value = instance_for(schema)
    assert isinstance(value["count"], int)
    assert len(value["names"]) == 2


def test_instance_is_deterministic_per_seed() -> None:
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    assert instance_for(schema, "a") == instance_for(schema, "a")
    assert instance_for(schema, "a") != instance_for(schema, "b")


def test_settings_from_env() -> None:
    settings = SandboxSettings.from_env(
        {
            "AIG_SANDBOX_HOST": "0.0.0.0",
            "AIG_SANDBOX_PORT": "9000",
            "AIG_SANDBOX_LATENCY_MS": "25",
            "AIG_SANDBOX_CHUNK_INTERVAL_MS": "5",
            "AIG_SANDBOX_ANSWER_TOKENS": "100",
            "AIG_SANDBOX_STREAM_CHUNKS": "20",
        }
    )
    assert (settings.host, settings.port, settings.latency_ms) == ("0.0.0.0", 9000, 25)
    assert (settings.chunk_interval_ms, settings.answer_tokens, settings.stream_chunks) == (
        5,
        100,
        20,
    )
    assert SandboxSettings.from_env({}) == SandboxSettings()
    with pytest.raises(ValueError):
        SandboxSettings.from_env({"AIG_SANDBOX_LATENCY_MS": "-1"})


def test_answer_length_follows_answer_tokens() -> None:
    prompt = Prompt(last_user_text="hello", input_chars=5)
    short = reply_to(prompt, 10)
    long = reply_to(prompt, 100)
    assert short.completion_tokens < 20
    assert 90 <= long.completion_tokens <= 110


def test_parallel_needs_the_word_and_two_tools() -> None:
    tools = [ToolSpec("a", {}), ToolSpec("b", {})]
    assert len(reply_to(Prompt(last_user_text="do it", tools=tools), 10).tool_calls) == 1
    assert len(reply_to(Prompt(last_user_text="Parallel!", tools=tools), 10).tool_calls) == 2
    serial = Prompt(last_user_text="parallel", tools=tools, allow_parallel_tools=False)
    assert len(reply_to(serial, 10).tool_calls) == 1


def test_split_text_rejoins() -> None:
    text = "abcdefghij" * 7
    pieces = split_text(text, 8)
    assert len(pieces) == 8
    assert "".join(pieces) == text
    assert split_text("ab", 8) == ["a", "b"]


def test_embedding_base64_is_little_endian_float32_of_the_vector() -> None:
    vector = embedding("x", 8)
    raw = base64.b64decode(embedding_base64("x", 8))
    assert struct.unpack("<8f", raw) == vector


def test_an_overrunning_provider_answers_past_max_tokens() -> None:
    prompt = Prompt(last_user_text="go on", max_tokens=10)
    assert reply_to(prompt, 200).completion_tokens == 10
    overrun = reply_to(prompt, 200, max_tokens_overrun=15)
    assert (overrun.completion_tokens, overrun.hit_max_tokens) == (25, True)
