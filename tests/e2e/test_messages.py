# mypy: disable-error-code="arg-type,union-attr,index,call-overload,list-item"
"""The Anthropic Messages API as an ingress, driven by the official `anthropic` SDK: every
model family answers it, streams in Anthropic's event sequence, and is billed exactly as
the same call through chat; errors arrive in Anthropic's shape with chat's statuses."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aig_common.money import NANO_PER_USD, apply_markup, parse_usd
from catalog.models import load_catalog
from devstack.stack import Stack

from .conftest import (
    FAMILY_MODELS,
    Sandbox,
    create_key,
    usage_rows,
    wait_for_usage,
    wait_until_settled,
)
from .test_openai_sdk import PERSON_SCHEMA, PIXEL_PNG

FAMILIES = ("anthropic", "openai", "google")
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
ASK = "Count my money"
NO_FALLBACKS = {"aig": {"fallbacks": False}}
# The SDK warns about the catalog's Claude model reaching end of life; not this test's subject.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def _client(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.edge_url, api_key=key, max_retries=0)


# Translation is the subject here, not money: SQLite's stack is enough. Billing and the
# 402 below run on both control databases.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_family_speaks_messages_text_images_tools_and_streams(
    stack: Stack, api_key: str, sandbox: Sandbox
) -> None:
    client = _client(stack, api_key)
    image_url = f"{stack.sandbox_url}/_sandbox/image.png"
    pixel = base64.b64encode(PIXEL_PNG).decode()
    for family in FAMILIES:
        model = FAMILY_MODELS[family]
        described = client.messages.create(
            model=model,
            max_tokens=2048,  # above the thinking budget, as Anthropic requires
            system=[{"type": "text", "text": "You describe pictures."}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these two pictures?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": pixel},
                        },
                        {"type": "image", "source": {"type": "url", "url": image_url}},
                    ],
                }
            ],
            stop_sequences=["NEVER-SAID"],
            # SDK 2.x dropped these two from its signature; the API still takes them.
            extra_body={"temperature": 0.5, "top_p": 0.9},
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
        assert described.type == "message" and described.role == "assistant", family
        assert described.id.startswith("msg_")
        assert described.stop_reason == "end_turn"
        # Claude is passed the request as sent, so it thinks first, its block signed;
        # Gemini's budget is translated (chat's reasoning_effort → a thinking budget) and its
        # thought summary comes back as an unsigned thinking block; gpt-4o-mini does not
        # reason, so the budget is dropped.
        thinks = family in ("anthropic", "google")
        blocks = described.content[1:] if thinks else described.content
        if thinks:
            thought = described.content[0]
            assert thought.type == "thinking" and thought.thinking, family
            assert bool(thought.signature) == (family == "anthropic")
        if family == "google":
            sent = sandbox.last_request("google")["body"]["generationConfig"]
            assert sent["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
        assert blocks[0].type == "text" and blocks[0].text, family
        assert described.usage.input_tokens > 0 and described.usage.output_tokens > 0

        structured = client.messages.create(
            model=model,
            max_tokens=200,
            messages=[{"role": "user", "content": "Who are you?"}],
            output_config={"format": {"type": "json_schema", "schema": PERSON_SCHEMA}},
        )
        assert set(json.loads(structured.content[0].text)) == {"name", "age", "tags"}, family

        ask = {"role": "user", "content": "Weather in Paris, in celsius?"}
        with client.messages.stream(
            model=model, max_tokens=200, messages=[ask], tools=[WEATHER_TOOL]
        ) as stream:
            kinds = [event.type for event in stream]
            called = stream.get_final_message()
        # Anthropic's sequence, one block opened, filled by input_json_delta, closed.
        assert kinds[:2] == ["message_start", "content_block_start"], (family, kinds)
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert "input_json" in kinds  # the SDK's event for each input_json_delta it parsed
        assert called.stop_reason == "tool_use", family
        [tool_use] = [block for block in called.content if block.type == "tool_use"]
        assert tool_use.name == "get_weather" and tool_use.id
        assert isinstance(tool_use.input, dict) and set(tool_use.input) >= {"city", "unit"}
        assert called.usage.input_tokens > 0 and called.usage.output_tokens > 0

        result = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}],
        }
        with client.messages.stream(
            model=model,
            max_tokens=200,
            messages=[ask, {"role": "assistant", "content": called.content}, result],
            tools=[WEATHER_TOOL],
        ) as stream:
            streamed = "".join(stream.text_stream)
            answered = stream.get_final_message()
        assert answered.stop_reason == "end_turn", family
        assert "18C" in streamed  # the simulator quotes the tool result it was given
        assert answered.content[0].text == streamed

    # A model that reasons gets the thinking budget as chat's reasoning_effort; a
    # max_tokens sized for Claude is capped at what the model can make.
    with client.messages.stream(  # the SDK refuses so large a max_tokens unstreamed
        model="o4-mini",
        max_tokens=500_000,
        messages=[{"role": "user", "content": ASK}],
        thinking={"type": "enabled", "budget_tokens": 8000},
    ) as stream:
        assert stream.get_final_message().content
    sent = sandbox.last_request("openai")["body"]
    assert sent["reasoning_effort"] == "medium"
    o4_mini = load_catalog().chat("o4-mini")
    assert o4_mini is not None
    assert sent["max_completion_tokens"] == o4_mini.max_output_tokens < 500_000

    counted = client.messages.count_tokens(
        model=FAMILY_MODELS["anthropic"],
        system="You are terse.",
        messages=[{"role": "user", "content": ASK * 30}],
        tools=[WEATHER_TOOL],
    )
    short = client.messages.count_tokens(
        model=FAMILY_MODELS["anthropic"], messages=[{"role": "user", "content": ASK}]
    )
    assert counted.input_tokens > short.input_tokens > 0


def test_messages_are_billed_exactly_like_chat(
    stack: Stack, admin: httpx.Client, base_url: str
) -> None:
    """The same prompt through /v1/messages and /v1/chat/completions (unary and streamed,
    each family) costs the same nano-USD in the ledger, and the usage the Anthropic client
    received prices to what was billed."""
    via_messages = create_key(admin, "messages-billing", credits_usd="10.00")
    via_chat = create_key(admin, "chat-billing", credits_usd="10.00")
    client = _client(stack, via_messages["key"])
    chat = openai.OpenAI(base_url=base_url, api_key=via_chat["key"], max_retries=0)
    catalog = load_catalog()
    expected = 0
    for family in FAMILIES:
        model = FAMILY_MODELS[family]
        prompt: Any = {"model": model, "max_tokens": 300}
        unary = client.messages.create(
            **prompt, messages=[{"role": "user", "content": ASK}], extra_body=NO_FALLBACKS
        )
        with client.messages.stream(
            **prompt, messages=[{"role": "user", "content": ASK}], extra_body=NO_FALLBACKS
        ) as stream:
            streamed = stream.get_final_message()
        priced = catalog.chat(model)
        assert priced is not None
        for usage in (unary.usage, streamed.usage):
            upstream = (
                usage.input_tokens * priced.input_nano_usd_per_token
                + usage.output_tokens * priced.output_nano_usd_per_token
            )
            expected += apply_markup(upstream, 4000)
        chat.chat.completions.create(
            **prompt, messages=[{"role": "user", "content": ASK}], extra_body=NO_FALLBACKS
        )
        assert list(
            chat.chat.completions.create(
                **prompt,
                messages=[{"role": "user", "content": ASK}],
                stream=True,
                extra_body=NO_FALLBACKS,
            )
        )

    calls = 2 * len(FAMILIES)
    wait_for_usage(base_url, via_messages["key"], calls)
    wait_for_usage(base_url, via_chat["key"], calls)

    def billed(key: str) -> dict[str, int]:
        return {
            row["model"]: parse_usd(row["billed_cost_usd"]) for row in usage_rows(base_url, key)
        }

    assert billed(via_messages["key"]) == billed(via_chat["key"])
    assert sum(billed(via_messages["key"]).values()) == expected
    me = wait_until_settled(base_url, via_messages["key"])
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - expected


def test_errors_arrive_in_anthropic_shape_with_chat_statuses(
    stack: Stack, admin: httpx.Client, api_key: str, base_url: str, sandbox: Sandbox
) -> None:
    broke = create_key(admin, "messages-402", credits_usd="0.00")
    with pytest.raises(anthropic.PaymentRequiredError) as refused:
        _client(stack, broke["key"]).messages.create(
            model=FAMILY_MODELS["anthropic"],
            max_tokens=1000,
            messages=[{"role": "user", "content": ASK}],
        )
    assert refused.value.status_code == 402
    body: Any = refused.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["code"] == "insufficient_credits"
    assert body["error"]["metadata"]["limit_source"] == "account"
    assert refused.value.request_id == refused.value.response.headers["x-request-id"]

    with pytest.raises(anthropic.AuthenticationError) as unknown:
        _client(stack, "sk-aig-" + "x" * 40).messages.create(
            model=FAMILY_MODELS["openai"],
            max_tokens=10,
            messages=[{"role": "user", "content": ASK}],
        )
    assert unknown.value.status_code == 401
    assert unknown.value.body["error"]["type"] == "authentication_error"

    # Bearer works as well as x-api-key; a body the SDK would not send gets a named 400.
    no_max_tokens = httpx.post(
        f"{stack.edge_url}/v1/messages",
        json={"model": FAMILY_MODELS["google"], "messages": [{"role": "user", "content": ASK}]},
        headers={"authorization": f"Bearer {api_key}", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert no_max_tokens.status_code == 400
    assert no_max_tokens.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        "request_id": no_max_tokens.headers["x-request-id"],
    }

    # An upstream failure: the status chat answers, in Anthropic's shape; after the stream
    # began, Anthropic's `event: error`, which the SDK raises mid-iteration.
    client = _client(stack, api_key)
    chat = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    ask: Any = {
        "model": FAMILY_MODELS["google"],
        "max_tokens": 50,
        "messages": [{"role": "user", "content": ASK}],
        "extra_body": NO_FALLBACKS,
    }
    sandbox.fault("google", 503, count=2)
    with pytest.raises(openai.APIStatusError) as via_chat:
        chat.chat.completions.create(**ask)
    with pytest.raises(anthropic.APIStatusError) as via_messages:
        client.messages.create(**ask)
    assert via_messages.value.status_code == via_chat.value.status_code >= 500
    assert via_messages.value.body["error"]["type"] in ("api_error", "overloaded_error")
    sandbox.fault("google", 500, after_chunks=2)
    with pytest.raises(anthropic.APIStatusError) as broken:  # noqa: SIM117 (one `with` each)
        with client.messages.stream(**ask) as stream:
            stream.until_done()
    assert broken.value.body["type"] == "error"
    assert broken.value.body["error"]["type"] == "api_error"


def test_claude_is_passed_through_with_thinking_and_prompt_caching_billed_exactly(
    stack: Stack, admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    """A Claude model through /v1/messages gets the client's own request: its thinking
    blocks come back signed and go back unaltered in a tool loop (the simulator refuses a
    tool turn whose thinking block is missing or altered, as Anthropic does), and
    `cache_control` turns on prompt caching, whose writes are billed at the 1-hour write
    price and whose reads at the cached price, to the nano-USD."""
    key = create_key(admin, "claude-native", credits_usd="10.00")
    client = _client(stack, key["key"])
    model = FAMILY_MODELS["anthropic"]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    # About 1,700 tokens, above Anthropic's 1,024-token cache minimum; the key makes the
    # prefix this test's own.
    text = f"You forecast weather for {key['key'][-8:]}. " * 160
    system: Any = [
        {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    ask: Any = {"role": "user", "content": "Weather in Paris, in celsius?"}
    request: Any = {
        "model": model,
        "max_tokens": 2048,
        "thinking": thinking,
        "system": system,
        "tools": [WEATHER_TOOL],
        "extra_body": NO_FALLBACKS,
    }
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14"}
    raw = client.messages.with_raw_response.create(**request, messages=[ask], extra_headers=beta)
    assert raw.headers["x-aig-provider"] == "anthropic"
    first = raw.parse()
    received = sandbox.last_request("anthropic")
    # The beta features the body may use go with it; the client's key does not.
    assert received["headers"]["anthropic-beta"] == beta["anthropic-beta"]
    assert key["key"] not in str(received["headers"])
    sent = received["body"]
    # Untranslated: the thinking option, the cache marker and the blocks as the client wrote
    # them; only the model (its upstream id) and the output cap are the gateway's.
    assert sent["thinking"] == thinking and sent["system"] == system
    assert sent["tools"] == [WEATHER_TOOL] and "aig" not in sent
    assert [block.type for block in first.content] == ["thinking", "text", "tool_use"]
    assert first.content[0].signature and first.model == model
    assert first.id == "msg_" + raw.headers["request-id"].removeprefix("req_")
    written = first.usage.cache_creation_input_tokens or 0
    assert written > 1024 and first.usage.cache_read_input_tokens == 0

    [tool_use] = [block for block in first.content if block.type == "tool_use"]
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}],
    }
    turn = [ask, {"role": "assistant", "content": first.content}, result]
    with client.messages.stream(**request, messages=turn) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        second = stream.get_final_message()
    assert "thinking_delta" in deltas and "signature_delta" in deltas
    assert second.content[0].type == "thinking" and "18C" in second.content[-1].text
    assert second.usage.cache_read_input_tokens == written
    assert (second.usage.cache_creation_input_tokens or 0) == 0

    # A tool turn without its thinking block is the client's error, answered in kind.
    with pytest.raises(anthropic.BadRequestError, match="thinking block"):
        client.messages.create(
            **request, messages=[ask, {"role": "assistant", "content": [tool_use]}, result]
        )

    priced = load_catalog().chat(model)
    assert priced is not None and priced.cache_write_1h_nano_usd_per_token is not None
    expected = 0
    for usage in (first.usage, second.usage):
        upstream = (
            usage.input_tokens * priced.input_nano_usd_per_token
            + (usage.cache_creation_input_tokens or 0) * priced.cache_write_1h_nano_usd_per_token
            + (usage.cache_read_input_tokens or 0) * priced.cached_input_nano_usd_per_token
            + usage.output_tokens * priced.output_nano_usd_per_token
        )
        expected += apply_markup(upstream, 4000)
    # The write alone costs twice the input price: a quarter more than plain input would.
    assert priced.cache_write_1h_nano_usd_per_token == 2 * priced.input_nano_usd_per_token
    rows = wait_for_usage(base_url, key["key"], 3)
    assert sum(parse_usd(row["billed_cost_usd"]) for row in rows) == expected
    assert sum(row["failed"] for row in rows) == 1  # the refused turn, at no cost
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - expected


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_documents_and_server_tools_reach_claude_and_only_claude(
    stack: Stack, api_key: str, sandbox: Sandbox
) -> None:
    """What no translation can carry (a document with citations, Anthropic's web search
    tool) is passed to Claude as sent, from its own route alone; a model aig translates
    for refuses it with a 400 in Anthropic's shape, before any spend."""
    client = _client(stack, api_key)
    document: Any = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "aig bills in nano-USD."},
        "citations": {"enabled": True},
    }
    search: Any = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    ask: Any = [{"role": "user", "content": [document, {"type": "text", "text": "Summarise."}]}]
    raw = client.messages.with_raw_response.create(
        model=FAMILY_MODELS["anthropic"], max_tokens=200, messages=ask, tools=[search]
    )
    assert raw.headers["x-aig-provider"] == "anthropic" and raw.parse().content
    sent = sandbox.last_request("anthropic")["body"]
    assert sent["messages"] == ask and sent["tools"] == [search]

    before = len(sandbox.requests("openai"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model=FAMILY_MODELS["openai"], max_tokens=200, messages=ask, tools=[search]
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "document" in refused.value.message
    assert len(sandbox.requests("openai")) == before
