from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageFunctionToolCall

from aig_common.errors import APIError
from router.adapters import gemini
from router.adapters.base import TokenUsage, UpstreamError

CheckChunks = Callable[[list[dict[str, Any]]], ChatCompletion]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}


def build(
    body: dict[str, Any],
    fetched: dict[str, tuple[str, bytes]] | None = None,
    max_output_tokens: int | None = None,
) -> dict[str, Any]:
    return gemini.build_generate_request(
        body, fetched_images=fetched or {}, max_output_tokens=max_output_tokens
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# --- request -----------------------------------------------------------------------------


def test_paths() -> None:
    assert gemini.generate_path("gemini-2.5-flash", stream=False) == (
        "/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert gemini.generate_path("models/gemini-2.5-flash", stream=True) == (
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )


def test_system_instruction_and_roles() -> None:
    request = build(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("hi"),
                {"role": "assistant", "content": "hello"},
                user("bye"),
            ]
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "hello"}]},
        {"role": "user", "parts": [{"text": "bye"}]},
    ]
    assert "generationConfig" not in request


def test_images_are_inlined_from_data_urls_and_fetched_urls() -> None:
    body = {
        "messages": [
            user(
                [
                    {"type": "text", "text": "Compare"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                ]
            )
        ]
    }
    assert gemini.image_urls_to_fetch(body) == ["https://x.test/a.jpg"]
    request = build(body, fetched={"https://x.test/a.jpg": ("image/jpeg", b"\xff\xd8\xff")})
    parts = request["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert parts[2] == {
        "inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(b"\xff\xd8\xff").decode()}
    }


def test_unfetched_image_url_is_400() -> None:
    body = {"messages": [user([{"type": "image_url", "image_url": {"url": "https://x.test/a"}}])]}
    with pytest.raises(APIError) as raised:
        build(body)
    assert raised.value.param == "messages[0].content[0].image_url.url"


def test_bad_data_url_is_400() -> None:
    body = {"messages": [user([{"type": "image_url", "image_url": {"url": "data:nope"}}])]}
    with pytest.raises(APIError) as raised:
        build(body)
    assert raised.value.status == 400


def test_tools_and_tool_round_trip_use_function_names() -> None:
    body = {
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        "messages": [
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_b~c2lnbmF0dXJl",
                        "type": "function",
                        "function": {"name": "now", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "call_b~c2lnbmF0dXJl", "content": "12:00"},
        ],
    }
    request = build(body)
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                },
                {"name": "now"},
            ]
        }
    ]
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"},
        ],
    }
    assert request["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
            {"functionResponse": {"name": "now", "response": {"result": "12:00"}}},
        ],
    }


def test_tool_message_without_matching_call_is_400() -> None:
    with pytest.raises(APIError) as raised:
        build({"messages": [user("x"), {"role": "tool", "tool_call_id": "nope", "content": "1"}]})
    assert raised.value.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_mapping(tool_choice: Any, expected: dict[str, Any]) -> None:
    request = build({"messages": [user("x")], "tools": [WEATHER_TOOL], "tool_choice": tool_choice})
    assert request["toolConfig"] == {"functionCallingConfig": expected}


def test_generation_config() -> None:
    request = build(
        {
            "messages": [user("x")],
            "temperature": 1.5,
            "top_p": 0.9,
            "max_tokens": 300,
            "stop": ["END", "STOP"],
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "response_format": {"type": "json_object"},
        },
        max_output_tokens=8192,
    )
    assert request["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "maxOutputTokens": 300,
        "stopSequences": ["END", "STOP"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseMimeType": "application/json",
    }


@pytest.mark.parametrize(
    ("effort", "budget"), [("minimal", 512), ("low", 1024), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort_is_a_thinking_budget_with_the_thoughts_returned(
    effort: str, budget: int
) -> None:
    request = build({"messages": [user("x")], "reasoning_effort": effort}, max_output_tokens=8)
    assert request["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": budget,
        "includeThoughts": True,
    }
    plain = build({"messages": [user("x")]}, max_output_tokens=8)
    assert "thinkingConfig" not in plain["generationConfig"]


def test_json_schema_and_default_max_tokens() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = build(
        {
            "messages": [user("x")],
            "stop": "END",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        },
        max_output_tokens=1024,
    )
    assert request["generationConfig"] == {
        "maxOutputTokens": 1024,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


# --- response ----------------------------------------------------------------------------

USAGE_METADATA = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 5,
    "totalTokenCount": 27,
    "cachedContentTokenCount": 4,
    "thoughtsTokenCount": 12,
}


def translate(payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
    completion, usage = gemini.completion_from_response(
        payload, public_model="gemini-2.5-flash", completion_id="chatcmpl-g", created=1735000000
    )
    ChatCompletion.model_validate(completion)
    return completion, usage


def test_text_response_and_usage() -> None:
    completion, usage = translate(
        {
            "candidates": [
                {
                    "index": 0,
                    "content": {
                        "role": "model",
                        "parts": [{"text": "thinking...", "thought": True}, {"text": "Hi"}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": USAGE_METADATA,
            "modelVersion": "gemini-2.5-flash",
        }
    )
    choice = completion["choices"][0]
    assert choice["message"]["content"] == "Hi"
    # The thought summary is kept apart from the answer, in chat's reasoning_content.
    assert choice["message"]["reasoning_content"] == "thinking..."
    assert choice["finish_reason"] == "stop"
    assert usage == TokenUsage(
        prompt_tokens=10, completion_tokens=17, cached_prompt_tokens=4, reasoning_tokens=12
    )
    assert completion["usage"]["total_tokens"] == 27


def test_function_call_response_sets_tool_calls_and_carries_signature() -> None:
    completion, _ = translate(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {
                                "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                "thoughtSignature": "c2ln",
                            }
                        ],
                    },
                    "finishReason": "STOP",
                }
            ]
        }
    )
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert gemini.thought_signature_of(call["id"]) == "c2ln"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_blocked_prompt_is_content_filter() -> None:
    completion, _ = translate(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    )
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == ""


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reason_mapping(reason: str, expected: str) -> None:
    completion, _ = translate(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}
            ]
        }
    )
    assert completion["choices"][0]["finish_reason"] == expected


# --- streaming ---------------------------------------------------------------------------


def stream_translator(include_usage: bool) -> gemini.GenerateStreamTranslator:
    return gemini.GenerateStreamTranslator(
        public_model="gemini-2.5-flash",
        completion_id="chatcmpl-g",
        created=1735000000,
        include_usage=include_usage,
    )


def candidate_chunk(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 10}}


def test_text_stream_with_usage(check_stream: CheckChunks) -> None:
    translator = stream_translator(include_usage=True)
    out = translator.feed(candidate_chunk([{"text": "Hel"}]))
    out += translator.feed(candidate_chunk([{"text": "lo"}]))
    final = candidate_chunk([{"text": "!"}], "STOP")
    final["usageMetadata"] = USAGE_METADATA
    out += translator.feed(final)
    out += translator.finish()
    completion = check_stream(out)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["completion_tokens"] == 17
    assert translator.finish() == [], "finish is idempotent"


def test_thoughts_stream_as_reasoning_content_before_the_answer(check_stream: CheckChunks) -> None:
    translator = stream_translator(include_usage=False)
    out = translator.feed(candidate_chunk([{"text": "Pondering.", "thought": True}]))
    out += translator.feed(candidate_chunk([{"text": "Hi"}], "STOP"))
    out += translator.finish()
    completion = check_stream(out)
    assert completion.choices[0].message.content == "Hi"
    deltas = [choice["delta"] for chunk in out for choice in chunk["choices"]]
    assert {"reasoning_content": "Pondering."} in deltas
    assert deltas.index({"reasoning_content": "Pondering."}) < deltas.index({"content": "Hi"})


def test_function_call_stream(check_stream: CheckChunks) -> None:
    translator = stream_translator(include_usage=False)
    out = translator.feed(candidate_chunk([{"text": "Checking."}]))
    out += translator.feed(
        candidate_chunk(
            [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
            "STOP",
        )
    )
    out += translator.finish()
    completion = check_stream(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [
        call
        for call in choice.message.tool_calls or []
        if isinstance(call, ChatCompletionMessageFunctionToolCall)
    ]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert all("usage" not in c for c in out)
    assert translator.usage == TokenUsage(prompt_tokens=10)


def test_stream_closed_without_finish_reason_still_finishes(check_stream: CheckChunks) -> None:
    translator = stream_translator(include_usage=True)
    out = translator.feed(candidate_chunk([{"text": "partial"}]))
    out += translator.finish()
    completion = check_stream(out)
    assert completion.choices[0].finish_reason == "stop"


def test_blocked_prompt_stream(check_stream: CheckChunks) -> None:
    translator = stream_translator(include_usage=False)
    out = translator.feed({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    out += translator.finish()
    completion = check_stream(out)
    assert completion.choices[0].finish_reason == "content_filter"


def test_stream_error_payload_raises() -> None:
    translator = stream_translator(include_usage=False)
    with pytest.raises(UpstreamError) as raised:
        translator.feed({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    assert raised.value.status == 503
    assert raised.value.body["error"]["code"] == "UNAVAILABLE"


# --- errors ------------------------------------------------------------------------------


def gemini_error(code: int, status: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": "went wrong", "status": status}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


INVALID_KEY = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
]
RETRY_INFO = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.2s"}]


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected_status", "expected_headers"),
    [
        (400, gemini_error(400, "INVALID_ARGUMENT"), {}, 400, {}),
        (400, gemini_error(400, "INVALID_ARGUMENT", INVALID_KEY), {}, 401, {}),
        (403, gemini_error(403, "PERMISSION_DENIED"), {}, 403, {}),
        (404, gemini_error(404, "NOT_FOUND"), {}, 404, {}),
        (
            429,
            gemini_error(429, "RESOURCE_EXHAUSTED"),
            {"Retry-After": "5"},
            429,
            {"retry-after": "5"},
        ),
        (429, gemini_error(429, "RESOURCE_EXHAUSTED", RETRY_INFO), {}, 429, {"retry-after": "37"}),
        (500, gemini_error(500, "INTERNAL"), {}, 500, {}),
        (503, gemini_error(503, "UNAVAILABLE"), {}, 503, {}),
        (504, gemini_error(504, "DEADLINE_EXCEEDED"), {}, 504, {}),
    ],
)
def test_error_mapping(
    status: int,
    body: bytes,
    headers: dict[str, str],
    expected_status: int,
    expected_headers: dict[str, str],
) -> None:
    error = gemini.error_from_response(status, body, headers)
    assert error.status == expected_status
    assert error.upstream_status == status
    assert error.headers == expected_headers
    assert error.body["error"]["message"] == "went wrong"


def test_array_wrapped_error_body() -> None:
    body = b"[" + gemini_error(429, "RESOURCE_EXHAUSTED") + b"]"
    error = gemini.error_from_response(429, body, {})
    assert error.body["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert error.body["error"]["type"] == "rate_limit_error"
