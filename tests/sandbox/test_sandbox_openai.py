"""The OpenAI and OpenRouter simulators, driven through the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
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

PROVIDER_BASES = {"openai": "/openai/v1", "openrouter": "/openrouter/api/v1"}
MODEL_BY_PROVIDER = {"openai": "gpt-4o-mini", "openrouter": "deepseek/deepseek-chat"}


@pytest.fixture(params=["openai", "openrouter"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(sandbox_url: str, provider: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="sk-test-secret", base_url=sandbox_url + PROVIDER_BASES[provider], max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
def model(provider: str) -> str:
    return MODEL_BY_PROVIDER[provider]


def test_plain_completion_is_deterministic_and_counts_tokens(
    client: openai.OpenAI, model: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Tell me about gateways"}]
    first = client.chat.completions.create(model=model, messages=messages)
    second = client.chat.completions.create(model=model, messages=messages)

    assert first.object == "chat.completion"
    assert first.model == model
    choice = first.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert "Tell me about gateways" in (choice.message.content or "")
    assert choice.message.content == second.choices[0].message.content
    assert first.id != second.id
    assert (first._request_id or "").startswith("req_")
    assert first.usage is not None
    assert first.usage.prompt_tokens >= 1
    assert first.usage.completion_tokens == pytest.approx(
        len(choice.message.content or "") / 4, abs=1
    )
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_openrouter_reports_provider_and_cost(sandbox_url: str) -> None:
    sdk = openai.OpenAI(api_key="sk-or", base_url=sandbox_url + "/openrouter/api/v1", max_retries=0)
    completion = sdk.chat.completions.create(
        model="mistralai/mistral-large", messages=[{"role": "user", "content": "hi"}]
    )
    extra = completion.model_dump()
    assert extra["provider"] == "Mistral"
    assert isinstance(extra["usage"]["cost"], float)
    assert extra["usage"]["cost"] > 0


def test_max_tokens_truncates_with_length(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "long please"}], max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens <= 3


def test_stream_with_usage_matches_plain_answer(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "stream this"}]
    plain = client.chat.completions.create(model=model, messages=messages)
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 4
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == (
        plain.choices[0].message.content
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_helper_accumulates(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "helper"}],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    assert "helper" in (final.choices[0].message.content or "")
    assert final.usage is not None and final.usage.total_tokens > 0


def test_tool_call_plain(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert arguments["unit"] == "celsius"


def test_named_tool_choice_and_none(client: openai.OpenAI, model: str) -> None:
    named = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "what time is it?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    named_calls = named.choices[0].message.tool_calls or []
    assert [call.function.name for call in named_calls] == ["get_time"]  # type: ignore[union-attr]

    declined = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "what time is it?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="none",
    )
    assert declined.choices[0].message.tool_calls is None
    assert declined.choices[0].finish_reason == "stop"


def test_tool_call_streamed_in_fragments(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather and time, in parallel please"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        stream=True,
    )
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    arguments: dict[int, str] = {}
    fragments_seen: dict[int, int] = {}
    finish_reason = None
    for chunk in stream:
        if not chunk.choices:  # OpenRouter always ends with a usage-only chunk
            continue
        choice = chunk.choices[0]
        finish_reason = choice.finish_reason or finish_reason
        for delta in choice.delta.tool_calls or []:
            if delta.id is not None:
                assert delta.index not in ids, "id must only come in the first delta"
                ids[delta.index] = delta.id
            assert delta.function is not None
            if delta.function.name is not None:
                assert delta.index not in names, "name must only come in the first delta"
                names[delta.index] = delta.function.name
            arguments[delta.index] = arguments.get(delta.index, "") + (
                delta.function.arguments or ""
            )
            fragments_seen[delta.index] = fragments_seen.get(delta.index, 0) + 1

    assert finish_reason == "tool_calls"
    assert names == {0: "get_weather", 1: "get_time"}
    assert all(count >= 3 for count in fragments_seen.values())
    jsonschema.validate(json.loads(arguments[0]), WEATHER_TOOL["function"]["parameters"])
    jsonschema.validate(json.loads(arguments[1]), TIME_TOOL["function"]["parameters"])


def test_tool_stream_accumulated_by_sdk_helper(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])


def test_answer_after_tool_result_mentions_it(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 degrees"},
        ],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert "sunny, 24 degrees" in (choice.message.content or "")


def test_json_schema_response_validates(client: openai.OpenAI, model: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 3},
            "rating": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "status": {"type": "string", "enum": ["draft", "final"]},
            "author": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
        },
        "required": ["title", "rating", "tags", "status", "author"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "review"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "review", "schema": schema, "strict": True},
        },
    )
    value = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    assert value["status"] == "draft"
    assert len(value["tags"]) == 2


def test_json_object_mode(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_images_are_acknowledged(client: openai.OpenAI, model: str, sandbox_url: str) -> None:
    import base64
    import hashlib

    png = httpx.get(sandbox_url + "/_sandbox/image.png").content
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    http_url = sandbox_url + "/_sandbox/image.png"
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe these"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                    {"type": "image_url", "image_url": {"url": http_url, "detail": "low"}},
                ],
            }
        ],
    )
    text = completion.choices[0].message.content or ""
    digest = hashlib.sha256(png).hexdigest()[:12]
    assert f"image 1: {len(png)} bytes sha256={digest}" in text
    assert f"image 2: {http_url}" in text


def test_embeddings_default_base64_and_float_agree(client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; float must give the same vector.
    decoded = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert [item.index for item in decoded.data] == [0, 1]
    assert len(decoded.data[0].embedding) == 1536
    assert decoded.data[0].embedding == floats.data[0].embedding
    assert decoded.data[0].embedding != decoded.data[1].embedding
    norm = sum(value * value for value in floats.data[0].embedding)
    assert norm == pytest.approx(1.0, rel=1e-3)
    assert decoded.usage.prompt_tokens >= 2


def test_embeddings_dimensions_and_token_arrays(client: openai.OpenAI) -> None:
    large = client.embeddings.create(
        model="text-embedding-3-large", input="x", encoding_format="float"
    )
    assert len(large.data[0].embedding) == 3072
    short = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=256)
    assert len(short.data[0].embedding) == 256
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2
    assert tokens.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)


def test_models_list(client: openai.OpenAI, provider: str) -> None:
    ids = [model.id for model in client.models.list()]
    assert MODEL_BY_PROVIDER[provider] in ids
    assert client.models.retrieve(MODEL_BY_PROVIDER[provider]).id == MODEL_BY_PROVIDER[provider]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_missing_api_key_is_401(sandbox_url: str) -> None:
    response = httpx.post(
        sandbox_url + "/openai/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_invalid_request_is_400(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[])
    assert "messages" in str(caught.value)


def test_fault_raises_internal_server_error_then_recovers(
    client: openai.OpenAI, model: str, provider: str, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": provider, "status": 500, "count": 1})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 500
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].finish_reason == "stop"


def test_rate_limit_fault_carries_retry_after(
    client: openai.OpenAI, model: str, provider: str, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": provider, "status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "7"


def test_openai_mid_stream_fault_cuts_the_connection(
    sandbox_url: str, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": "openai", "after_chunks": 3})
    sdk = openai.OpenAI(api_key="sk", base_url=sandbox_url + "/openai/v1", max_retries=0)
    received = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for chunk in sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "cut me"}], stream=True
        ):
            received.append(chunk)
    assert len(received) == 3


def test_openrouter_mid_stream_fault_sends_error_chunk(
    sandbox_url: str, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": "openrouter", "after_chunks": 2})
    sdk = openai.OpenAI(api_key="sk", base_url=sandbox_url + "/openrouter/api/v1", max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk.chat.completions.create(
            model="deepseek/deepseek-chat", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk)
    assert len(received) == 2
    assert "mid-stream" in caught.value.message
