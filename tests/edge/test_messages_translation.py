"""Anthropic Messages ⇄ the internal chat body, as pure functions: no stack needed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aig.router.v1 import router_pb2 as pb
from aig_common.errors import APIError
from controldb.money import LimitExceeded
from edge.admission import payment_required
from edge.anthropic_ingress import errors
from edge.anthropic_ingress.request import messages_to_chat
from edge.anthropic_ingress.response import StreamTranslator, completion_to_message
from edge.http import install_error_handlers

TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


def _request(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def test_a_tool_round_trip_with_system_and_images_becomes_chat() -> None:
    chat = messages_to_chat(
        _request(
            system="Be brief.",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?", "cache_control": {"type": "x"}},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Thanks."},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "no"},
                                {"type": "image", "source": {"type": "url", "url": "https://x/i"}},
                            ],
                        },
                    ],
                },
            ],
            tools=[TOOL],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            temperature=0.2,
            metadata={"user_id": "u1"},
            thinking={"type": "enabled", "budget_tokens": 2048},
            top_k=5,
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        )
    )
    assert chat["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        # The result comes first, right after the call it answers; its image follows.
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/i"}},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": TOOL["input_schema"]},
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["max_completion_tokens"] == 64  # what admission reserves against
    assert chat["stop"] == ["END"] and chat["temperature"] == 0.2 and chat["user"] == "u1"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }
    assert "thinking" not in chat and "top_k" not in chat and "max_tokens" not in chat


@pytest.mark.parametrize(
    ("fields", "reasoning", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, True, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, True, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, True, "high"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, True, "high"),
        ({"thinking": {"type": "disabled"}}, True, None),
        ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, False, None),
    ],
)
def test_thinking_becomes_reasoning_effort_only_where_the_model_reasons(
    fields: dict[str, Any], reasoning: bool, effort: str | None
) -> None:
    chat = messages_to_chat(_request(**fields), reasoning=reasoning)
    assert chat.get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages.0.content.0.type",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ],
)
def test_bad_requests_name_the_anthropic_field(change: dict[str, Any], param: str) -> None:
    body = {key: value for key, value in _request(**change).items() if value is not None}
    with pytest.raises(APIError) as refused:
        messages_to_chat(body)
    assert refused.value.status == 400 and refused.value.param == param


def _usage(prompt: int = 12, completion: int = 7, cached: int = 2) -> pb.TokenUsage:
    return pb.TokenUsage(
        prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached
    )


def test_a_completion_becomes_a_message_with_the_routers_usage() -> None:
    completion = {
        "model": "gpt-4o-mini",
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "Let me look.",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "f", "arguments": '{"a": 1}'}},
                        {"id": "call_2", "function": {"name": "g", "arguments": "not json"}},
                    ],
                },
            }
        ],
    }
    message = completion_to_message(completion, _usage(), "req_abc")
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "call_2", "name": "g", "input": {"arguments": "not json"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 2,
        },
    }


def _events(frames: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for frame in frames:
        name, data = frame.decode().strip().split("\n")
        payload = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append(payload)
    return events


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "model": "gemini-2.5-flash",
        "choices": [{"delta": delta, "finish_reason": finish_reason}],
    }


def test_chunks_become_anthropic_blocks_in_order() -> None:
    translator = StreamTranslator("req_1", "gemini-2.5-flash")
    frames: list[bytes] = []
    for chunk in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"arguments": "1}"}}]}),
        _chunk(
            {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}
        ),
        _chunk({}, finish_reason="tool_calls"),
    ]:
        frames += translator.chunk(chunk)
    frames += translator.end(_usage(cached=0))
    events = _events(frames)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0]["message"]["id"] == "msg_1" and events[0]["message"]["content"] == []
    assert events[6]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert [e["delta"]["partial_json"] for e in events[7:9]] == ['{"a":', "1}"]
    assert events[3]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[13]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[13]["usage"]["input_tokens"] == 12 and events[13]["usage"]["output_tokens"] == 7


def test_an_empty_stream_still_opens_and_closes_the_message() -> None:
    events = _events(StreamTranslator("req_2", "m").end(_usage()))
    assert [e["type"] for e in events] == ["message_start", "ping", "message_delta", "message_stop"]
    assert events[2]["delta"]["stop_reason"] == "end_turn"


def test_a_402_keeps_its_code_and_limits_inside_error() -> None:
    resets = datetime(2026, 12, 5, tzinfo=UTC)
    limit = LimitExceeded(
        "key_daily_cap", 5_000_000_000, 4_000_000_000, 500_000_000, 900_000_000, resets
    )
    body = orjson.loads(errors.from_api_error(payment_required(limit), "req_9"))
    assert body["type"] == "error" and body["request_id"] == "req_9"
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["code"] == "key_daily_cap"
    assert body["error"]["metadata"]["limit_usd"] == "5.00"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_router_errors_are_reshaped_keeping_their_status(status: int, kind: str) -> None:
    openai_shaped = orjson.dumps({"error": {"message": "boom", "type": "x", "code": "y"}})
    body = orjson.loads(errors.from_openai_body(status, openai_shaped, "req_1"))
    assert body == {
        "type": "error",
        "error": {"type": kind, "message": "boom"},
        "request_id": "req_1",
    }


def test_errors_from_any_layer_under_v1_messages_are_anthropic_shaped() -> None:
    app = FastAPI()
    install_error_handlers(app)

    async def fail() -> None:
        raise RuntimeError("secret detail")

    app.add_api_route("/v1/messages", fail, methods=["POST"])
    app.add_api_route("/v1/chat/completions", fail, methods=["POST"])
    client = TestClient(app, raise_server_exceptions=False)
    anthropic_shaped = client.post("/v1/messages")
    assert anthropic_shaped.status_code == 500
    assert anthropic_shaped.json()["error"] == {
        "type": "api_error",
        "message": "The gateway hit an internal error.",
    }
    assert client.post("/v1/messages/nope").json()["error"]["type"] == "not_found_error"
    assert client.post("/v1/chat/completions").json()["error"]["code"] == "internal_error"


def test_a_translated_models_reasoning_becomes_a_thinking_block_first() -> None:
    """Gemini's thought summary (chat's `reasoning_content`) is a thinking block, unsigned:
    only Anthropic signs its own."""
    completion = {
        "model": "gemini-2.5-flash",
        "choices": [
            {"finish_reason": "stop", "message": {"content": "Hi", "reasoning_content": "Hmm."}}
        ],
    }
    message = completion_to_message(completion, _usage(), "req_t")
    assert message["content"] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": ""},
        {"type": "text", "text": "Hi"},
    ]
    translator = StreamTranslator("req_t", "gemini-2.5-flash")
    frames: list[bytes] = []
    for delta in ({"reasoning_content": "Hm"}, {"reasoning_content": "m."}, {"content": "Hi"}):
        frames += translator.chunk(_chunk(delta))
    frames += translator.end(_usage())
    events = _events(frames)
    blocks = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert blocks == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
    ]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "Hm"},
        {"type": "thinking_delta", "thinking": "m."},
        {"type": "text_delta", "text": "Hi"},
    ]


CLAUDE_ONLY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "x" * 300},
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": "Summarise it."},
            ],
        }
    ],
    "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
}


def test_blocks_only_claude_reads_pin_the_call_to_its_own_route() -> None:
    chat = messages_to_chat(CLAUDE_ONLY, claude=True)
    # The document stands in as its JSON (admission reserves for its size); the server
    # tool is no function tool; no translated route could carry either, so none is tried.
    [user] = chat["messages"]
    assert '"type":"document"' in user["content"][0]["text"]
    assert user["content"][1] == {"type": "text", "text": "Summarise it."}
    assert "tools" not in chat
    assert chat["aig"] == {"fallbacks": False}
    assert "aig" not in messages_to_chat(_request(), claude=True)


def test_other_models_refuse_blocks_only_claude_reads() -> None:
    with pytest.raises(APIError, match="unsupported content block type 'document'"):
        messages_to_chat({**CLAUDE_ONLY, "tools": None})
    with pytest.raises(APIError, match="server tool 'web_search_20250305'"):
        messages_to_chat({**CLAUDE_ONLY, "messages": _request()["messages"]})


def test_a_system_turn_mid_conversation_stays_in_place() -> None:
    chat = messages_to_chat(
        _request(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "cwd: /tmp"}]},
                {"role": "user", "content": "go"},
            ]
        )
    )
    assert [m["role"] for m in chat["messages"]] == ["user", "system", "user"]
    assert chat["messages"][1]["content"] == [{"type": "text", "text": "cwd: /tmp"}]
    with pytest.raises(APIError, match=r"messages\.0\.content\.0\.type"):
        messages_to_chat(
            _request(messages=[{"role": "system", "content": [{"type": "image", "source": {}}]}])
        )
