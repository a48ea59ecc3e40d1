"""The Responses ⇄ chat translation on its own: request bodies, answers and event streams."""

from __future__ import annotations

from typing import Any

import pytest

from aig_common.errors import APIError
from edge.responses_ingress.request import chat_body, chat_messages, native_body, parse_request
from edge.responses_ingress.response import (
    NativeEvents,
    ResponseEvents,
    ResponseShell,
    native_response,
    response_from_completion,
    response_id_of_item,
)

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def test_a_full_request_becomes_the_chat_body_a_chat_client_would_send() -> None:
    request = parse_request(
        {
            "model": "o4-mini",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Weather?"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "And this:"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA=="},
                    ],
                },
            ],
            "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "reasoning": {"effort": "high"},
            "max_output_tokens": 300,
            "temperature": 0.5,
            "metadata": {"k": "v"},
            "stream": True,
            "aig": {"fallbacks": False},
        }
    )
    body = chat_body(request, [], reasoning=True)
    assert body == {
        "model": "o4-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                ],
            },
        ],
        "tools": [
            {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
        "reasoning_effort": "high",
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "aig": {"fallbacks": False},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # A model without reasoning_effort gets none; metadata is echoed, never sent upstream.
    assert "reasoning_effort" not in chat_body(request, [], reasoning=False)
    assert request.metadata == {"k": "v"}
    assert [item["id"][:4] for item in request.input_items] == ["msg_", "msg_"]


def test_calls_and_their_outputs_become_assistant_tool_calls_and_tool_messages() -> None:
    request = parse_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "summary": []},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
        }
    )
    messages = chat_messages(request.input_items)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1]["content"] == "Let me look."
    assert [call["id"] for call in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c2", "content": "rain"}
    # A call with no assistant text before it opens an assistant turn of its own.
    lone = chat_messages(
        [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    )
    assert lone[0]["content"] is None and lone[0]["tool_calls"][0]["id"] == "c"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": [{"type": "computer_call", "id": "x"}]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "item_reference"}]}, "input[0].id"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "input": "x", "store": "yes"}, "store"),
        ({"model": "m", "input": "x", "background": True}, "background"),
    ],
)
def test_bad_requests_name_the_responses_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as raised:
        parse_request(body)
    assert raised.value.status == 400
    assert raised.value.param == param


def _shell(**body: Any) -> ResponseShell:
    return ResponseShell.new(parse_request({"model": "m", "input": "x", **body}), "m")


def test_a_chat_completion_becomes_a_response_with_responses_usage() -> None:
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Looking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get", "arguments": '{"a":1}'},
                        }
                    ],
                },
            }
        ],
        "usage": USAGE,
    }
    response = response_from_completion(_shell(metadata={"k": "v"}), completion)
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["id"].startswith("resp_") and response["metadata"] == {"k": "v"}
    message, call = response["output"]
    # Item ids name their response, so an item_reference finds it.
    assert response_id_of_item(message["id"]) == response_id_of_item(call["id"]) == response["id"]
    assert response_id_of_item("msg_abc") is None
    assert message["content"][0]["text"] == "Looking."
    assert (call["type"], call["call_id"], call["arguments"]) == (
        "function_call",
        "call_1",
        '{"a":1}',
    )
    assert response["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 19,
    }
    cut = response_from_completion(
        _shell(), {"choices": [{"finish_reason": "length", "message": {"content": "Hal"}}]}
    )
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_chunk_stream_becomes_the_responses_event_sequence() -> None:
    events = ResponseEvents(_shell())
    out = events.start()
    out += events.feed(_chunk({"role": "assistant", "content": "Hel"}))
    out += events.feed(_chunk({"content": "lo"}))
    call = {"index": 0, "id": "call_9", "function": {"name": "get", "arguments": '{"a"'}}
    out += events.feed(_chunk({"tool_calls": [call]}))
    out += events.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    out += events.feed(_chunk({}, "tool_calls"))
    out += events.feed({"choices": [], "usage": USAGE})
    out += events.finish()
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[6]["text"] == "Hello"
    assert out[12]["arguments"] == '{"a":1}' and out[13]["output_index"] == 1
    final: dict[str, Any] = out[-1]["response"]
    assert final is events.final and final["usage"]["output_tokens"] == 7
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["call_id"] == "call_9"


def test_a_broken_stream_ends_with_an_error_and_a_failed_response() -> None:
    events = ResponseEvents(_shell())
    out = events.start() + events.feed(_chunk({"content": "Hi"}))
    out += events.fail("upstream_error", "The provider went away.")
    assert [e["type"] for e in out[-2:]] == ["error", "response.failed"]
    assert out[-1]["response"]["error"] == {
        "code": "upstream_error",
        "message": "The provider went away.",
    }
    assert events.final is None


# --- pass-through: the client's own body for OpenAI, aig's ids on OpenAI's answer ----------

HISTORY: list[dict[str, Any]] = [
    {
        "type": "message",
        "id": "msg_old_0",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_image", "image_url": "https://x/cat.png", "detail": None}],
    },
    {"type": "reasoning", "id": "rs_old_1", "summary": []},
    {"type": "reasoning", "id": "rs_old_2", "summary": [], "encrypted_content": "gAAA"},
    {
        "type": "function_call",
        "id": "fc_old_3",
        "status": "completed",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    },
]


def test_the_native_body_is_the_clients_own_made_self_contained() -> None:
    raw = {
        "model": "gpt-4o-mini",
        "previous_response_id": "resp_old",
        "input": [{"type": "function_call_output", "call_id": "call_1", "output": "18C"}],
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": True,
        "stream": True,
        "metadata": {"k": "v"},
        "aig": {"fallbacks": ["claude-sonnet-4-5"]},
    }
    request = parse_request(raw)
    native = native_body(raw, request, HISTORY, reasoning=True)
    assert native["store"] is False
    assert "previous_response_id" not in native and "aig" not in native
    for kept in ("model", "instructions", "tools", "text", "reasoning", "include", "metadata"):
        assert native[kept] == raw[kept]
    assert native["stream"] is True
    # The stored conversation, spelled out: no aig item ids, no reasoning the provider
    # could only look up by id, no null fields.
    assert native["input"] == [
        {
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://x/cat.png"}],
        },
        {"type": "reasoning", "id": "rs_old_2", "summary": [], "encrypted_content": "gAAA"},
        {
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call_output",
            "status": "completed",
            "call_id": "call_1",
            "output": "18C",
        },
    ]
    unreasoning = native_body(raw, request, HISTORY, reasoning=False)
    assert "reasoning" not in unreasoning and unreasoning["text"] == raw["text"]
    # The client's own reasoning items keep what the Responses API continues from.
    replayed = parse_request(
        {"model": "o4-mini", "input": [{**HISTORY[2], "summary": [{"type": "summary_text"}]}]}
    )
    assert replayed.input_items[0]["encrypted_content"] == "gAAA"
    assert chat_messages(replayed.input_items) == []


def _openai_response(status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_openai",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "gpt-4o-mini-2024-07-18",
        "previous_response_id": None,
        "store": False,
        "max_output_tokens": 16384,
        "output": [
            {"type": "reasoning", "id": "rs_openai", "summary": []},
            {
                "type": "message",
                "id": "msg_openai",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
            },
        ],
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }


def test_a_passed_through_response_gets_aigs_ids() -> None:
    request = parse_request({"model": "gpt-4o-mini", "input": "Hi", "previous_response_id": "r"})
    shell = ResponseShell.new(request, "gpt-4o-mini")
    response = native_response(shell, _openai_response())
    assert response["id"] == shell.id and response["model"] == "gpt-4o-mini"
    assert [item["id"] for item in response["output"]] == [
        shell.item_id("rs", 0),
        shell.item_id("msg", 1),
    ]
    assert response_id_of_item(response["output"][1]["id"]) == shell.id
    assert response["store"] is True and response["previous_response_id"] == "r"
    assert response["max_output_tokens"] is None
    assert response["usage"] == {"input_tokens": 5, "output_tokens": 2}


def test_a_passed_through_stream_gets_aigs_ids_and_keeps_the_final_response() -> None:
    shell = ResponseShell.new(parse_request({"model": "gpt-4o-mini", "input": "Hi"}), "m")
    events = NativeEvents(shell)
    opening = {**_openai_response("in_progress"), "output": [], "usage": None}
    message = _openai_response()["output"][1]
    upstream = [
        {"type": "response.created", "sequence_number": 0, "response": opening},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 1,
         "item": {**message, "content": []}},
        {"type": "response.output_text.delta", "sequence_number": 2, "output_index": 1,
         "content_index": 0, "item_id": "msg_openai", "delta": "Hi"},
        {"type": "response.output_item.done", "sequence_number": 3, "output_index": 1,
         "item": message},
        {"type": "response.completed", "sequence_number": 4, "response": _openai_response()},
    ]  # fmt: skip
    out = [event for chunk in upstream for event in events.feed(chunk)]
    assert [e["sequence_number"] for e in out] == [0, 1, 2, 3, 4]
    assert out[0]["response"]["id"] == shell.id and out[0]["response"]["model"] == "m"
    item_id = shell.item_id("msg", 1)
    assert out[1]["item"]["id"] == out[2]["item_id"] == out[3]["item"]["id"] == item_id
    assert events.final is not None and events.final["id"] == shell.id
    assert events.final["output"][1]["id"] == item_id and events.final["store"] is True

    broken = NativeEvents(shell)
    for chunk in upstream[:4]:
        broken.feed(chunk)
    failed = broken.fail("server_error", "gone")
    assert [e["type"] for e in failed] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in failed] == [4, 5]
    assert failed[1]["response"]["output"] == [out[3]["item"]]
    assert broken.final is None
