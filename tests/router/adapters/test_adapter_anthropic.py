from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)

from aig_common.errors import APIError
from router.adapters import anthropic
from router.adapters.base import TokenUsage, UpstreamError

CheckChunks = Callable[[list[dict[str, Any]]], ChatCompletion]

PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def build(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("max_output_tokens", 8192)
    kwargs.setdefault("stream", False)
    return anthropic.build_messages_request(body, "claude-sonnet-4-5-20250929", **kwargs)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# --- request -----------------------------------------------------------------------------


def test_system_and_developer_messages_become_top_level_system() -> None:
    request = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("hi"),
            ]
        }
    )
    assert request["system"] == "Be brief.\n\nUse French."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert request["model"] == "claude-sonnet-4-5-20250929"
    assert request["max_tokens"] == 8192
    assert "stream" not in request


def test_images_become_base64_and_url_sources() -> None:
    request = build(
        {
            "messages": [
                user(
                    [
                        {"type": "text", "text": "Compare"},
                        {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ]
                )
            ]
        }
    )
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]


@pytest.mark.parametrize(
    "url", ["data:image/png,notbase64", "data:image/bmp;base64,Qk0=", "ftp://x/a.png", "junk"]
)
def test_bad_image_urls_are_400_with_param(url: str) -> None:
    with pytest.raises(APIError) as raised:
        build({"messages": [user([{"type": "image_url", "image_url": {"url": url}}])]})
    assert raised.value.status == 400
    assert raised.value.param == "messages[0].content[0].image_url.url"


def tool_round_trip_messages() -> list[dict[str, Any]]:
    return [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "22C"}]},
        user("Thanks"),
    ]


def test_tool_round_trip_merges_tool_results_into_one_user_turn() -> None:
    request = build({"messages": tool_round_trip_messages(), "tools": [WEATHER_TOOL]})
    assert [turn["role"] for turn in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "22C"},
        {"type": "text", "text": "Thanks"},
    ]
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]


def test_tool_without_parameters_gets_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    request = build({"messages": [user("time?")], "tools": [tool]})
    assert request["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_tool_message_without_matching_call_is_400() -> None:
    messages = [user("x"), {"role": "tool", "tool_call_id": "toolu_missing", "content": "1"}]
    with pytest.raises(APIError) as raised:
        build({"messages": messages})
    assert raised.value.status == 400
    assert raised.value.param == "messages[1].tool_call_id"


def test_invalid_tool_call_arguments_are_400() -> None:
    messages = [
        user("x"),
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ],
        },
    ]
    with pytest.raises(APIError) as raised:
        build({"messages": messages})
    assert raised.value.param == "messages[1].tool_calls[0].function.arguments"


def test_consecutive_same_role_turns_are_merged() -> None:
    request = build({"messages": [user("a"), user("b"), {"role": "assistant", "content": "c"}]})
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice_mapping(tool_choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": [user("x")], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert build(body)["tool_choice"] == expected


def test_sampling_stop_user_and_max_tokens() -> None:
    request = build(
        {
            "messages": [user("x")],
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-42",
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "seed": 3,
        },
        stream=True,
    )
    assert request["temperature"] == 1.0
    assert request["top_p"] == 0.9
    assert request["stop_sequences"] == ["END"]
    assert request["metadata"] == {"user_id": "u-42"}
    assert request["max_tokens"] == 200, "max_completion_tokens wins over max_tokens"
    assert request["stream"] is True
    assert "seed" not in request


def test_max_tokens_is_capped_at_the_model_limit() -> None:
    request = build({"messages": [user("x")], "max_tokens": 10**6}, max_output_tokens=64000)
    assert request["max_tokens"] == 64000


def test_negative_temperature_is_clamped_and_stop_list_kept() -> None:
    request = build({"messages": [user("x")], "temperature": -1, "stop": ["a", "b"]})
    assert request["temperature"] == 0.0
    assert request["stop_sequences"] == ["a", "b"]


def test_json_schema_maps_to_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = build(
        {
            "messages": [user("x")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
    )
    assert request["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in request


def test_json_object_adds_a_system_instruction() -> None:
    request = build(
        {
            "messages": [{"role": "system", "content": "Be brief."}, user("x")],
            "response_format": {"type": "json_object"},
        }
    )
    assert request["system"].startswith("Be brief.\n\n")
    assert "single valid JSON object" in request["system"]
    assert request["messages"][-1]["role"] == "user", "no prefill"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"max_tokens": 0}, "max_tokens")],
)
def test_unsupported_options_are_400(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as raised:
        build({"messages": [user("x")], **extra})
    assert raised.value.param == param


# --- response ----------------------------------------------------------------------------


def message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 20,
        },
    }


def translate(msg: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
    completion, usage = anthropic.completion_from_message(
        msg, public_model="claude-sonnet-4.5", completion_id="chatcmpl-1", created=1735000000
    )
    ChatCompletion.model_validate(completion)
    return completion, usage


def test_text_response() -> None:
    completion, usage = translate(
        message([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}], "end_turn")
    )
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "Hello"
    assert choice["finish_reason"] == "stop"
    assert completion["model"] == "claude-sonnet-4.5"
    assert completion["usage"]["prompt_tokens"] == 33
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}
    # input_tokens excludes reads and writes: the prompt is all three, the writes 5-minute
    # ones when the API gives no breakdown by lifetime.
    assert usage == TokenUsage(
        prompt_tokens=33, completion_tokens=5, cached_prompt_tokens=20, cache_write_prompt_tokens=3
    )


def test_cache_writes_split_by_lifetime() -> None:
    usage = anthropic.usage_from_anthropic(
        {
            "input_tokens": 7,
            "output_tokens": 2,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50,
            "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
        }
    )
    assert usage == TokenUsage(
        prompt_tokens=157,
        completion_tokens=2,
        cached_prompt_tokens=100,
        cache_write_prompt_tokens=20,
        cache_write_1h_prompt_tokens=30,
    )


def test_tool_use_response() -> None:
    completion, _ = translate(
        message(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
            ],
            "tool_use",
        )
    )
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reason_mapping(stop_reason: str, finish_reason: str) -> None:
    completion, _ = translate(message([{"type": "text", "text": "x"}], stop_reason))
    assert completion["choices"][0]["finish_reason"] == finish_reason


# --- streaming ---------------------------------------------------------------------------

TOOL_INPUT = {"city": "Paris", "units": "celsius", "days": [1, 2]}


def tool_stream_events() -> list[tuple[str, dict[str, Any]]]:
    fragments = ['{"city": "Pa', 'ris", "un', 'its": "celsius", "days": [1', ", 2]}"]
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **message([], "end_turn"),
                    "stop_reason": None,
                    "usage": {
                        "input_tokens": 50,
                        "cache_read_input_tokens": 10,
                        "output_tokens": 1,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me "},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "check."},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    for block_index, call_id in ((1, "toolu_a"), (2, "toolu_b")):
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": block_index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call_id,
                        "name": "get_weather",
                        "input": {},
                    },
                },
            )
        )
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": block_index,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                },
            )
        )
        for fragment in fragments:
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": block_index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": block_index}))
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        ),
        ("ping", {"type": "ping"}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def run_stream(
    events: list[tuple[str, dict[str, Any]]], *, include_usage: bool
) -> tuple[list[dict[str, Any]], anthropic.MessagesStreamTranslator]:
    translator = anthropic.MessagesStreamTranslator(
        public_model="claude-sonnet-4.5",
        completion_id="chatcmpl-s",
        created=1735000000,
        include_usage=include_usage,
    )
    out = [c for event, data in events for c in translator.feed(event, data)]
    return out, translator


def test_stream_with_tool_calls_accumulates_to_valid_arguments(check_stream: CheckChunks) -> None:
    out, translator = run_stream(tool_stream_events(), include_usage=True)
    completion = check_stream(out)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["completion_tokens"] == 42
    assert out[-1]["usage"]["prompt_tokens"] == 60

    choice = completion.choices[0]
    assert choice.message.content == "Let me check."
    assert choice.finish_reason == "tool_calls"
    calls = [
        call
        for call in choice.message.tool_calls or []
        if isinstance(call, ChatCompletionMessageFunctionToolCall)
    ]
    assert [call.id for call in calls] == ["toolu_a", "toolu_b"]
    for call in calls:
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == TOOL_INPUT
    assert translator.done
    assert translator.usage == TokenUsage(
        prompt_tokens=60, completion_tokens=42, cached_prompt_tokens=10
    )


def test_stream_without_usage_has_no_usage_fields(check_stream: CheckChunks) -> None:
    out, translator = run_stream(tool_stream_events(), include_usage=False)
    check_stream(out)
    assert all("usage" not in c and c["choices"] for c in out)
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage is not None, "usage is still metered"


def test_every_chunk_repeats_id_created_model() -> None:
    out, _ = run_stream(tool_stream_events(), include_usage=True)
    for chunk in out:
        ChatCompletionChunk.model_validate(chunk)
        assert (chunk["id"], chunk["created"], chunk["model"]) == (
            "chatcmpl-s",
            1735000000,
            "claude-sonnet-4.5",
        )


def test_error_event_raises_mapped_error() -> None:
    translator = anthropic.MessagesStreamTranslator(
        public_model="m", completion_id="c", created=1, include_usage=False
    )
    translator.feed("message_start", {"type": "message_start", "message": message([], "end_turn")})
    with pytest.raises(UpstreamError) as raised:
        translator.feed(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    assert raised.value.status == 503
    assert raised.value.upstream_status == 529
    assert raised.value.body["error"]["message"] == "Overloaded"
    assert raised.value.body["error"]["code"] == "overloaded_error"


# --- errors ------------------------------------------------------------------------------


def anthropic_error(error_type: str, message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_1"}
    ).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "headers", "expected_status", "expected_headers"),
    [
        (400, "invalid_request_error", {}, 400, {}),
        (401, "authentication_error", {}, 401, {}),
        (429, "rate_limit_error", {"retry-after": "12"}, 429, {"retry-after": "12"}),
        (500, "api_error", {}, 500, {}),
        (503, "api_error", {}, 503, {}),
        (529, "overloaded_error", {}, 503, {}),
    ],
)
def test_error_mapping(
    status: int,
    error_type: str,
    headers: dict[str, str],
    expected_status: int,
    expected_headers: dict[str, str],
) -> None:
    error = anthropic.error_from_response(status, anthropic_error(error_type, "nope"), headers)
    assert error.status == expected_status
    assert error.upstream_status == status
    assert error.headers == expected_headers
    assert error.body["error"]["message"] == "nope"
    assert error.body["error"]["code"] == error_type
    assert set(error.body["error"]) == {"message", "type", "param", "code"}
