# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""The official OpenAI Python SDK against the running gateway, one model per provider family."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import openai
import pytest

from .conftest import FAMILY_MODELS

MODELS = list(FAMILY_MODELS.values())
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
# A 1x1 transparent PNG.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("model", MODELS)
def test_plain_completion(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == model
    assert completion.id
    assert completion.created > 1_700_000_000
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion._request_id and completion._request_id.startswith("req_")


@pytest.mark.parametrize("model", MODELS)
def test_streamed_completion(client: openai.OpenAI, model: str) -> None:
    plain = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me about streams"}]
    )
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me about streams"}],
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) > 2
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.model == model for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]


@pytest.mark.parametrize("model", MODELS)
def test_streamed_with_include_usage(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "Count the tokens"}],
        stream_options={"include_usage": True},
    ) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert final.usage is not None and final.usage.total_tokens == last.usage.total_tokens
    assert final.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_tool_call_round_trip(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert "18 degrees and sunny" in (second.choices[0].message.content or "")


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_calls_accumulate_to_json(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "Weather and time in parallel for Paris"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    jsonschema.validate(
        json.loads(calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"]
    )
    jsonschema.validate(
        json.loads(calls[1].function.arguments), TIME_TOOL["function"]["parameters"]
    )


@pytest.mark.parametrize("model", MODELS)
def test_named_tool_choice_forces_that_tool(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]


@pytest.mark.parametrize("model", MODELS)
def test_vision_data_url(client: openai.OpenAI, model: str) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PIXEL_PNG).decode()
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
                ],
            }
        ],
    )
    content = completion.choices[0].message.content or ""
    assert f"{len(PIXEL_PNG)} bytes" in content


@pytest.mark.parametrize("model", MODELS)
def test_json_object_mode(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a cat as JSON"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_mode(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Invent a person"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), PERSON_SCHEMA)


@pytest.mark.parametrize("model", MODELS)
async def test_async_client_plain_and_stream(async_client: openai.AsyncOpenAI, model: str) -> None:
    completion = await async_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello async"}]
    )
    assert completion.choices[0].message.content
    stream = await async_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello async"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == completion.choices[0].message.content
    assert usage is not None and usage.prompt_tokens == completion.usage.prompt_tokens


async def test_async_tools_and_embeddings(async_client: openai.AsyncOpenAI) -> None:
    completion = await async_client.chat.completions.create(
        model=FAMILY_MODELS["anthropic"],
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    assert completion.choices[0].message.tool_calls
    embedding = await async_client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(embedding.data[0].embedding) == 1536


EMBEDDING_MODELS = [
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "gemini-embedding-001",
    "mistral-embed",
]


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_embeddings_base64_default_and_float(client: openai.OpenAI, model: str) -> None:
    inputs = ["The quick brown fox", "jumps over the lazy dog"]
    default = client.embeddings.create(model=model, input=inputs)
    as_float = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    assert default.model == model
    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) > 0
    # Base64 decoded by the SDK and floats sent as JSON must be the same vectors (float32).
    for decoded, floats in zip(default.data, as_float.data, strict=True):
        assert len(decoded.embedding) == len(floats.embedding)
        assert all(
            abs(a - b) < 1e-6 for a, b in zip(decoded.embedding, floats.embedding, strict=True)
        )
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens > 0


def test_embeddings_dimensions(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-large", input="short", dimensions=256)
    assert len(result.data[0].embedding) == 256


def test_models_list(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert len(models) >= 42
    for name in [*MODELS, *EMBEDDING_MODELS]:
        assert name in models
    assert models["claude-sonnet-4-5"].owned_by == "anthropic"
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
