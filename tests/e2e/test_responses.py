# mypy: disable-error-code="arg-type,call-overload,union-attr,index,list-item"
"""The OpenAI Responses API (/v1/responses) through the whole gateway, driven by the
official OpenAI SDKs: one model of each family, stored conversations, money, and OpenAI's
models passed through to the (simulated) Responses API itself."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from aig_common.money import apply_markup, parse_usd

from .conftest import (
    FAMILY_MODELS,
    Sandbox,
    create_key,
    list_price_nano_usd,
    wait_for_usage,
    wait_until_settled,
)

MODELS = [FAMILY_MODELS[family] for family in ("openai", "anthropic", "google")]
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("model", MODELS)
def test_each_family_through_the_responses_api(client: openai.OpenAI, model: str) -> None:
    plain = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
    assert plain.object == "response" and plain.status == "completed"
    assert plain.model == model
    assert plain.output_text.startswith('Sandbox answer to "Say hello"')
    usage = plain.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0

    events = list(client.responses.create(model=model, input="Stream to me", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed.startswith('Sandbox answer to "Stream to me"')
    completed = events[-1].response
    assert completed.output_text == streamed and completed.usage.output_tokens > 0

    with client.responses.stream(model=model, input="Stream with the helper") as stream:
        final = stream.get_final_response()
    assert final.output_text.startswith('Sandbox answer to "Stream with the helper"')

    # A function-tool round trip, continued from the stored response.
    asked = client.responses.create(
        model=model, input="What's the weather in Paris?", tools=[WEATHER_TOOL]
    )
    calls = [item for item in asked.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    answered = client.responses.create(
        model=model,
        previous_response_id=asked.id,
        tools=[WEATHER_TOOL],
        input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C, sunny"}
        ],
    )
    assert "18C, sunny" in answered.output_text

    parsed = client.responses.parse(
        model=model, input="Invent a person", text_format=Person, store=False
    )
    assert isinstance(parsed.output_parsed, Person)


def test_stored_responses_belong_to_their_account(
    client: openai.OpenAI, admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    first = client.responses.create(
        model="gpt-5-mini",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Remember the word 'teal'"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png"},
                ],
            }
        ],
        reasoning={"effort": "low"},
        metadata={"ticket": "42"},
        max_output_tokens=500,
    )
    sent = _responses_request(sandbox)
    assert sent["reasoning"]["effort"] == "low" and sent["max_output_tokens"] == 500
    follow = client.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input="Which word?",
        reasoning={"effort": "low"},
    )
    sent = _responses_request(sandbox)
    assert "reasoning" not in sent  # gpt-4o-mini takes no reasoning settings
    # The conversation spelled out; gpt-5-mini's reasoning item is not (OpenAI, keeping
    # nothing, could not look it up).
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][0]["content"][1]["image_url"] == "https://example.com/cat.png"
    assert follow.previous_response_id == first.id

    fetched = client.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == first.output_text
    assert fetched.metadata == {"ticket": "42"}
    items = client.responses.input_items.list(follow.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "Which word?"

    stranger = openai.OpenAI(
        base_url=base_url, api_key=create_key(admin, "stranger")["key"], max_retries=0
    )
    for attempt in (
        lambda: stranger.responses.retrieve(first.id),
        lambda: stranger.responses.delete(first.id),
        lambda: stranger.responses.input_items.list(first.id),
        lambda: stranger.responses.create(
            model="gpt-4o-mini", previous_response_id=first.id, input="Steal it"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()

    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="Forget me", store=False
    )
    assert raw.headers["x-aig-provider"] == "openai"
    assert raw.headers["x-aig-model"] == "gpt-4o-mini"
    assert raw.headers["x-aig-attempts"] == "1"
    assert raw.headers["x-request-id"].startswith("req_")
    unstored = raw.parse()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="gpt-4o-mini", previous_response_id=unstored.id, input="Go on"
        )
    assert refused.value.body["param"] == "previous_response_id"


def test_billed_exactly_like_chat_and_402_in_openai_shape(
    admin: httpx.Client, base_url: str
) -> None:
    """The same prompt through chat and through /v1/responses, each on an account of its
    own: the ledger bills both the same nano-USD, the list price of the usage received."""
    model = FAMILY_MODELS["anthropic"]
    chat_key = create_key(admin, "chat-twin", credits_usd="5.00")["key"]
    responses_key = create_key(admin, "responses-twin", credits_usd="5.00")["key"]
    chat = openai.OpenAI(base_url=base_url, api_key=chat_key, max_retries=0)
    responses = openai.OpenAI(base_url=base_url, api_key=responses_key, max_retries=0)
    completion = chat.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bill"}],
    )
    response = responses.responses.create(model=model, instructions="Be brief.", input="Bill")
    assert response.usage.input_tokens == completion.usage.prompt_tokens
    assert response.usage.output_tokens == completion.usage.completion_tokens
    billed = []
    for key in (chat_key, responses_key):
        rows = wait_for_usage(base_url, key, 1)
        wait_until_settled(base_url, key)
        billed.append(sum(parse_usd(row["billed_cost_usd"]) for row in rows))
    list_price = list_price_nano_usd(model, completion.usage)
    assert billed[0] == billed[1] == apply_markup(list_price, 4000)

    broke = openai.OpenAI(
        base_url=base_url,
        api_key=create_key(admin, "broke", credits_usd="0.00")["key"],
        max_retries=0,
    )
    with pytest.raises(openai.APIStatusError) as refused:
        broke.responses.create(model=model, input="Bill me", max_output_tokens=1000)
    assert refused.value.status_code == 402
    assert refused.value.code == "insufficient_credits"
    assert refused.value.response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_stream_that_breaks_ends_in_response_failed(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.fault("anthropic", 500, after_chunks=2)
    events = list(
        client.responses.create(
            model=FAMILY_MODELS["anthropic"], input="A long answer please", stream=True
        )
    )
    assert events[0].type == "response.created"
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    assert not any(e.type == "response.completed" for e in events)


def _responses_request(sandbox: Sandbox) -> dict[str, Any]:
    """The last body the OpenAI simulator received, which must be a Responses API call."""
    seen = sandbox.last_request("openai")
    assert seen["path"] == "/openai/v1/responses", seen["path"]
    return dict(seen["body"])


def _aig_item_id(response: Any, prefix: str, index: int) -> str:
    """The id aig gives output item `index` of `response` (it names the response)."""
    return f"{prefix}_{response.id.removeprefix('resp_')}_{index}"


def _chat_usage(usage: Any) -> SimpleNamespace:
    """A Responses `usage` in chat's names, for `list_price_nano_usd`."""
    return SimpleNamespace(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        prompt_tokens_details=usage.input_tokens_details,
    )


def test_openai_models_pass_through_to_the_responses_api(
    admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    """gpt-4o-mini is sent the client's own body on OpenAI's Responses endpoint (never a
    chat translation), with the conversation spelled out and `store: false`, and answers
    under aig's ids; the stored responses, their continuation and the bill work as on the
    translated path."""
    model = FAMILY_MODELS["openai"]
    key = create_key(admin, "responses-pass-through", credits_usd="5.00")["key"]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

    raw = client.responses.with_raw_response.create(
        model=model, input="Say hello", instructions="Be brief.", metadata={"t": "1"}
    )
    assert raw.headers["x-aig-provider"] == "openai"
    plain = raw.parse()
    sent = _responses_request(sandbox)
    assert sent["model"] == "gpt-4o-mini" and sent["store"] is False
    assert sent["instructions"] == "Be brief." and sent["metadata"] == {"t": "1"}
    assert sent["max_output_tokens"] == 16384  # capped at the catalog's maximum
    assert "stream" not in sent and "previous_response_id" not in sent
    assert plain.model == model and plain.max_output_tokens is None
    assert raw.http_response.json()["store"] is True
    assert plain.output_text.startswith('Sandbox answer to "Say hello"')
    assert [item.id for item in plain.output] == [_aig_item_id(plain, "msg", 0)]
    fetched = client.responses.retrieve(plain.id)
    assert fetched.id == plain.id and fetched.output_text == plain.output_text
    assert fetched.output[0].id == plain.output[0].id

    events = list(client.responses.create(model=model, input="Stream to me", stream=True))
    assert _responses_request(sandbox)["stream"] is True
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    streamed = events[-1].response
    assert events[0].response.id == streamed.id and streamed.id.startswith("resp_")
    item_id = _aig_item_id(streamed, "msg", 0)
    assert {getattr(e, "item_id", item_id) for e in events} == {item_id}
    assert {e.item.id for e in events if e.type.startswith("response.output_item")} == {item_id}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith('Sandbox answer to "Stream to me"') and streamed.output_text == text
    assert client.responses.retrieve(streamed.id).output_text == text

    # A tool round trip: the follow-up names the stored response; OpenAI gets it spelled out.
    with client.responses.stream(
        model=model, input="What's the weather in Paris?", tools=[WEATHER_TOOL]
    ) as stream:
        asked = stream.get_final_response()
    [call] = [item for item in asked.output if item.type == "function_call"]
    assert call.id == _aig_item_id(asked, "fc", 0)
    answered = client.responses.create(
        model=model,
        previous_response_id=asked.id,
        tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}],
    )
    assert "18C, sunny" in answered.output_text
    assert answered.previous_response_id == asked.id
    sent = _responses_request(sandbox)
    assert "previous_response_id" not in sent and sent["store"] is False
    assert [item["type"] for item in sent["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert sent["input"][1]["call_id"] == call.call_id and "id" not in sent["input"][1]
    assert sent["tools"][0]["name"] == "get_weather"
    items = client.responses.input_items.list(answered.id)
    assert [item.type for item in items.data] == ["function_call_output"]
    assert all(seen["path"] == "/openai/v1/responses" for seen in sandbox.requests("openai")), (
        "an OpenAI model was translated onto chat completions"
    )

    # Billed exactly: the list price of the usage each answer reported, marked up.
    answers = [plain, streamed, asked, answered]
    rows = wait_for_usage(base_url, key, len(answers))
    wait_until_settled(base_url, key)
    billed = sum(parse_usd(row["billed_cost_usd"]) for row in rows)
    expected = sum(
        apply_markup(list_price_nano_usd(model, _chat_usage(answer.usage)), 4000)
        for answer in answers
    )
    assert billed == expected

    # The same prompt through chat costs the same tokens: one bill for either path.
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
    )
    assert plain.usage.input_tokens == completion.usage.prompt_tokens
    assert plain.usage.output_tokens == completion.usage.completion_tokens

    # Reasoning continues from what OpenAI encrypted for it (the sandbox, keeping nothing,
    # refuses a reasoning item without it): kept in the stored output, sent back as it was.
    reasoned = client.responses.create(
        model="gpt-5-mini",
        input="Think first",
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
    )
    reasoning = reasoned.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.id == _aig_item_id(reasoned, "rs", 0)
    client.responses.create(model="gpt-5-mini", previous_response_id=reasoned.id, input="Go on")
    sent = _responses_request(sandbox)
    assert sent["input"][1]["type"] == "reasoning"
    assert sent["input"][1]["encrypted_content"] == reasoning.encrypted_content
    assert [item["type"] for item in sent["input"]] == [
        "message",
        "reasoning",
        "message",
        "message",
    ]


def test_a_failover_off_openai_is_translated_and_continues_either_way(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    """OpenAI down: gpt-4o-mini's OpenRouter fallback answers through the chat translation,
    and the stored conversation continues on OpenAI itself, passed through."""
    model = FAMILY_MODELS["openai"]
    sandbox.fault("openai", 503)
    raw = client.responses.with_raw_response.create(model=model, input="Remember 'teal'")
    assert raw.headers["x-aig-provider"] == "openrouter"
    first = raw.parse()
    assert first.output[0].id == _aig_item_id(first, "msg", 0)
    assert sandbox.last_request("openrouter")["path"].endswith("/chat/completions")

    follow = client.responses.create(model=model, previous_response_id=first.id, input="Which?")
    sent = _responses_request(sandbox)
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][1]["content"][0]["text"] == first.output_text
    assert client.responses.retrieve(follow.id).output_text == follow.output_text

    sandbox.fault("openai", 503)
    events = list(client.responses.create(model=model, input="Stream elsewhere", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output[0].id == _aig_item_id(events[-1].response, "msg", 0)
    assert sandbox.last_request("openrouter")["body"]["stream"] is True


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_passed_through_stream_that_breaks_ends_in_response_failed(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.fault("openai", 500, after_chunks=4)
    events = list(
        client.responses.create(
            model=FAMILY_MODELS["openai"], input="A long answer please", stream=True
        )
    )
    assert _responses_request(sandbox)["stream"] is True
    assert events[0].type == "response.created"
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.status == "failed"
    assert events[-1].response.id == events[0].response.id
