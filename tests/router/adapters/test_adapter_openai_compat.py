from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from router.adapters import openai_compat
from router.adapters.base import TokenUsage, UpstreamError

CheckChunks = Callable[[list[dict[str, Any]]], ChatCompletion]


def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1735000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }


UPSTREAM_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 4,
    "total_tokens": 16,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 1},
    "cost": 0.00042,
}


def usage_only_chunk() -> dict[str, Any]:
    return {**chunk({}), "choices": [], "usage": UPSTREAM_USAGE}


def upstream_stream() -> list[dict[str, Any]]:
    return [
        chunk({"role": "assistant", "content": ""}, usage=None),
        chunk({"content": "Hel"}, usage=None),
        chunk({"content": "lo"}, usage=None),
        chunk({}, "stop", usage=None),
        usage_only_chunk(),
    ]


def test_streaming_request_always_asks_for_usage_and_drops_aig_fields() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "aig": {"tags": ["x"]},
    }
    request = openai_compat.build_chat_request(body, "gpt-4o-2024-08-06", stream=True)
    assert request["model"] == "gpt-4o-2024-08-06"
    assert request["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert "aig" not in request
    assert body["model"] == "gpt-4o" and "aig" in body, "the caller's body is not mutated"


def test_non_streaming_request_has_no_stream_options() -> None:
    body = {"model": "m", "messages": [], "stream_options": {"include_usage": True}}
    request = openai_compat.build_chat_request(body, "up", stream=False)
    assert "stream_options" not in request and "stream" not in request


def test_completion_gets_public_model_and_usage() -> None:
    payload = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1735000000,
        "model": "openai/gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hi"},
                "logprobs": None,
            }
        ],
        "usage": UPSTREAM_USAGE,
    }
    completion, usage = openai_compat.completion_from_response(payload, public_model="gpt-4o")
    ChatCompletion.model_validate(completion)
    assert completion["model"] == "gpt-4o"
    assert "cost" not in completion["usage"], "the upstream price is aig's, not the client's"
    assert usage == TokenUsage(
        prompt_tokens=12, completion_tokens=4, cached_prompt_tokens=8, reasoning_tokens=1
    )


def test_stream_with_client_usage_keeps_usage_chunk_last(check_stream: CheckChunks) -> None:
    rewriter = openai_compat.ChatStreamRewriter("gpt-4o", client_wants_usage=True)
    out = [c for upstream in upstream_stream() for c in rewriter.feed(upstream)]
    completion = check_stream(out)
    assert all(c["model"] == "gpt-4o" for c in out)
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 16
    assert completion.choices[0].message.content == "Hello"
    assert rewriter.usage is not None and rewriter.usage.prompt_tokens == 12


def test_stream_without_client_usage_hides_it_but_still_meters() -> None:
    rewriter = openai_compat.ChatStreamRewriter("gpt-4o", client_wants_usage=False)
    out = [c for upstream in upstream_stream() for c in rewriter.feed(upstream)]
    assert len(out) == 4
    assert all("usage" not in c and c["choices"] for c in out)
    assert rewriter.usage is not None and rewriter.usage.completion_tokens == 4


def test_usage_attached_to_a_choice_chunk_is_split_off(check_stream: CheckChunks) -> None:
    rewriter = openai_compat.ChatStreamRewriter("m", client_wants_usage=True)
    out = rewriter.feed(chunk({"role": "assistant", "content": "x"}))
    out += rewriter.feed(chunk({}, "stop", usage=UPSTREAM_USAGE))
    check_stream(out)
    assert [len(c["choices"]) for c in out] == [1, 1, 0]
    assert out[1]["usage"] is None


def test_error_object_mid_stream_raises() -> None:
    rewriter = openai_compat.ChatStreamRewriter("m", client_wants_usage=False)
    with pytest.raises(UpstreamError) as raised:
        rewriter.feed({"error": {"code": 502, "message": "Provider disconnected"}})
    assert raised.value.status == 502
    assert raised.value.body["error"]["message"] == "Provider disconnected"


def openai_error(message: str, error_type: str, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "headers", "expected_status", "expected_headers"),
    [
        (429, {"Retry-After": "7", "x-request-id": "req_1"}, 429, {"retry-after": "7"}),
        (500, {}, 500, {}),
        (503, {"retry-after-ms": "1500"}, 503, {"retry-after-ms": "1500"}),
        (529, {}, 503, {}),
        (400, {"retry-after": "3"}, 400, {}),
        (402, {}, 502, {}),
    ],
)
def test_error_mapping(
    status: int, headers: dict[str, str], expected_status: int, expected_headers: dict[str, str]
) -> None:
    error = openai_compat.error_from_response(status, openai_error("boom", "server_error"), headers)
    assert error.status == expected_status
    assert error.upstream_status == status
    assert error.headers == expected_headers
    assert error.body["error"]["message"] == "boom"


def test_error_keeps_openai_code_and_param() -> None:
    body = openai_error("too long", "invalid_request_error", "context_length_exceeded")
    error = openai_compat.error_from_response(400, body, {})
    assert error.body["error"]["code"] == "context_length_exceeded"
    assert error.body["error"]["type"] == "invalid_request_error"


def test_non_json_error_body_becomes_message() -> None:
    error = openai_compat.error_from_response(502, b"<html>Bad gateway</html>", {})
    assert error.status == 502
    assert "Bad gateway" in error.body["error"]["message"]
    assert error.body["error"]["type"] == "server_error"
