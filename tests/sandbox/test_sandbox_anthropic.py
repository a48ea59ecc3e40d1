"""The Anthropic Messages simulator, driven through the official `anthropic` SDK."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

SEARCH_TOOL: Any = {
    "name": "search_docs",
    "description": "Search the documentation",
    "input_schema": {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10},
            "filters": {
                "type": "object",
                "properties": {"section": {"type": "string", "enum": ["api", "guides"]}},
                "required": ["section"],
            },
        },
        "required": ["query", "limit", "filters"],
    },
}
CLOCK_TOOL: Any = {
    "name": "read_clock",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}},
        "required": ["zone"],
    },
}
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def client(sandbox_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key="sk-ant-secret", base_url=sandbox_url + "/anthropic", max_retries=0
    ) as sdk:
        yield sdk


def test_create_plain_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert "Hello Claude" in message.content[0].text
    assert message.usage.input_tokens >= 1
    assert message.usage.output_tokens == pytest.approx(len(message.content[0].text) / 4, abs=1)
    again = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    assert again.content[0].text == message.content[0].text  # type: ignore[union-attr]


def test_system_instruction_for_json_is_followed(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Respond with a single valid JSON object and nothing else.",
        messages=[{"role": "user", "content": "Describe a cat"}],
    )
    block = message.content[0]
    assert block.type == "text"
    assert isinstance(json.loads(block.text), dict)


def test_small_max_tokens_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "a long story"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 2


def test_stream_text_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "stream it"}]
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) >= 4
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(deltas)
    assert "stream it" in final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 1


def test_raw_stream_event_order(client: anthropic.Anthropic) -> None:
    events = list(
        client.messages.create(
            model=MODEL, max_tokens=64, stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tool_use_plain_has_lead_in_and_valid_input(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=512,
        tools=[SEARCH_TOOL],
        messages=[{"role": "user", "content": "find the rate limit docs"}],
    )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool_use = message.content[1]
    assert tool_use.type == "tool_use"
    assert tool_use.id.startswith("toolu_")
    assert tool_use.name == "search_docs"
    jsonschema.validate(tool_use.input, SEARCH_TOOL["input_schema"])


def test_forced_tool_choice_has_no_text(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=512,
        tools=[SEARCH_TOOL, CLOCK_TOOL],
        tool_choice={"type": "tool", "name": "read_clock"},
        messages=[{"role": "user", "content": "what time?"}],
    )
    assert [(block.type, getattr(block, "name", None)) for block in message.content] == [
        ("tool_use", "read_clock")
    ]


def test_stream_tool_use_final_message(client: anthropic.Anthropic) -> None:
    partial_json: list[str] = []
    with client.messages.stream(
        model=MODEL,
        max_tokens=512,
        tools=[SEARCH_TOOL, CLOCK_TOOL],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "search and read the clock in parallel"}],
    ) as stream:
        for event in stream:
            if event.type == "input_json" and event.partial_json:
                partial_json.append(event.partial_json)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [block.name for block in uses] == ["search_docs", "read_clock"]
    jsonschema.validate(uses[0].input, SEARCH_TOOL["input_schema"])
    jsonschema.validate(uses[1].input, CLOCK_TOOL["input_schema"])
    assert len(partial_json) >= 4


def test_answer_after_tool_result(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[SEARCH_TOOL],
        messages=[
            {"role": "user", "content": "find docs"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "search_docs", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found 3 pages"}
                ],
            },
        ],
    )
    assert message.stop_reason == "end_turn"
    assert "found 3 pages" in message.content[0].text  # type: ignore[union-attr]


def test_image_blocks_are_acknowledged(client: anthropic.Anthropic, sandbox_url: str) -> None:
    png = httpx.get(sandbox_url + "/_sandbox/image.png").content
    url = sandbox_url + "/_sandbox/image.png"
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(png).decode(),
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": url}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    )
    text = message.content[0].text  # type: ignore[union-attr]
    assert f"image 1: {len(png)} bytes sha256={hashlib.sha256(png).hexdigest()[:12]}" in text
    assert f"image 2: {url}" in text


def test_output_config_json_schema(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "sources": {"type": "array", "items": {"type": "string", "format": "uri"}},
        },
        "required": ["answer", "confidence", "sources"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "answer as JSON"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(message.content[0].text), schema)  # type: ignore[union-attr]


def test_validation_errors_use_anthropic_shape(sandbox_url: str) -> None:
    url = sandbox_url + "/anthropic/v1/messages"
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    no_version = httpx.post(url, json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["type"] == "error"
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    assert no_version.json()["request_id"] == no_version.headers["request-id"]

    no_key = httpx.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"

    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    no_max_tokens = httpx.post(url, json={**body, "max_tokens": None}, headers=headers)
    assert no_max_tokens.status_code == 400
    assert "max_tokens" in no_max_tokens.json()["error"]["message"]


def test_overloaded_fault(client: anthropic.Anthropic, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "anthropic", "status": 529})
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 529
    assert isinstance(caught.value, anthropic.OverloadedError)
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert caught.value.response.headers["request-id"].startswith("req_")


def test_rate_limit_fault(client: anthropic.Anthropic, control: httpx.Client) -> None:
    control.post(
        "/_sandbox/faults", json={"provider": "anthropic", "status": 429, "retry_after": 3}
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_mid_stream_overloaded_event_raises(
    client: anthropic.Anthropic, control: httpx.Client
) -> None:
    control.post(
        "/_sandbox/faults", json={"provider": "anthropic", "status": 529, "after_chunks": 4}
    )
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "break"}]
        ) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts, "some text arrived before the break"
    assert "overloaded_error" in str(caught.value)


# --- prompt caching and extended thinking (sandbox/prompt_cache.py) ----------------------

# About 1,500 tokens at four characters each: above the 1,024-token cache minimum.
LONG_SYSTEM = "You answer questions about the aig gateway's handbook. " * 110


def _cached_system(text: str, ttl: str = "5m") -> Any:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def test_a_marked_prefix_is_written_once_then_read(client: anthropic.Anthropic) -> None:
    # A system text of its own, so no other test's entry is read here.
    system = _cached_system(LONG_SYSTEM + hashlib.sha256(b"write-read").hexdigest())
    ask: Any = [{"role": "user", "content": "What is aig?"}]
    first = client.messages.create(model=MODEL, max_tokens=64, system=system, messages=ask)
    written = first.usage.cache_creation_input_tokens or 0
    assert written >= 1024
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == written
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 0

    second = client.messages.create(model=MODEL, max_tokens=64, system=system, messages=ask)
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    # The whole prompt is the same size either way; only how it splits changes.
    total = [
        u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
        for u in (first.usage, second.usage)
    ]
    assert total[0] == total[1] > written


def test_one_hour_entries_and_short_prefixes(client: anthropic.Anthropic) -> None:
    system = _cached_system(LONG_SYSTEM + hashlib.sha256(b"1h").hexdigest(), ttl="1h")
    ask: Any = [{"role": "user", "content": "Hi"}]
    first = client.messages.create(model=MODEL, max_tokens=32, system=system, messages=ask)
    assert first.usage.cache_creation is not None
    assert (
        first.usage.cache_creation.ephemeral_1h_input_tokens
        == first.usage.cache_creation_input_tokens
    )
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    # Below the minimum nothing is cached, marked or not.
    short = client.messages.create(
        model=MODEL, max_tokens=32, system=_cached_system("Be brief."), messages=ask
    )
    assert short.usage.cache_creation_input_tokens == 0
    assert short.usage.cache_read_input_tokens == 0
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        client.messages.create(
            model=MODEL, max_tokens=32, system=_cached_system(LONG_SYSTEM, ttl="2h"), messages=ask
        )


def test_thinking_comes_first_and_signed_plain_and_streamed(client: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "Why is the sky blue?"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    message = client.messages.create(model=MODEL, max_tokens=4096, thinking=thinking, messages=ask)
    first, *rest = message.content
    assert first.type == "thinking" and first.thinking and first.signature
    assert [block.type for block in rest] == ["text"]

    with client.messages.stream(
        model=MODEL, max_tokens=4096, thinking=thinking, messages=ask
    ) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    assert streamed.content[0].type == "thinking"
    assert streamed.content[0].signature == first.signature  # same prompt, same thought


def test_thinking_blocks_must_come_back_unaltered(client: anthropic.Anthropic) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    ask: Any = [{"role": "user", "content": "Search the docs for webhooks."}]
    first = client.messages.create(
        model=MODEL, max_tokens=2048, thinking=thinking, tools=[SEARCH_TOOL], messages=ask
    )
    assert first.content[0].type == "thinking"
    call = next(block for block in first.content if block.type == "tool_use")
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "found 3 pages"}],
    }
    replayed: list[Any] = [block.model_dump(exclude_none=True) for block in first.content]

    def answer_after(turn: list[Any]) -> Any:
        return client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=thinking,
            tools=[SEARCH_TOOL],
            messages=[*ask, {"role": "assistant", "content": turn}, result],
        )

    assert answer_after(replayed).content[-1].type == "text"
    forged: list[Any] = [{**replayed[0], "thinking": "something else"}, *replayed[1:]]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        answer_after(forged)
    # Dropping the thinking block (as a translating gateway would) is refused too.
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        answer_after(replayed[1:])
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 100},
            messages=ask,
        )
