# mypy: disable-error-code="arg-type,union-attr,index,call-overload"
"""The two ingress dialects beside chat, /v1/responses and /v1/messages, on the routes chat
tests cover: a model whose primary provider is OpenRouter, failover when the primary answers
5xx, and a call that fails on every route, answered in the dialect's error shape and billed
nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aig_common.money import NANO_PER_USD, apply_markup, parse_usd
from catalog.models import load_catalog
from devstack.stack import Stack

from .conftest import (
    Sandbox,
    close_breakers,
    create_key,
    usage_rows,
    wait_for_usage,
    wait_until_settled,
)

CREDITS_USD = 10
NO_FALLBACKS = {"aig": {"fallbacks": False}}
# Models whose primary route is OpenRouter: gpt-5-codex (OpenAI serves it only on its own
# Responses API) and DeepSeek's chat model.
OPENROUTER_MODELS = ["gpt-5-codex", "deepseek-chat"]
# One model per provider these tests fault (model -> the provider of its primary route),
# to close that provider's breaker afterwards.
BREAKER_MODELS = {
    "gpt-4o-mini": "openai",
    "claude-sonnet-4-5": "anthropic",
    "mistral-medium-3": "openrouter",
    "gemini-2.5-flash": "google",
}
# Every route of a model's chain, by provider (services/catalog/catalog.yaml).
CHAINS = {
    "claude-sonnet-4-5": ["anthropic", "openrouter", "openai", "google"],
    "gpt-4o-mini": ["openai", "openrouter", "google"],
}


@pytest.fixture
def healed(sandbox: Sandbox, client: openai.OpenAI) -> Iterator[Sandbox]:
    sandbox.reset()
    close_breakers(client, BREAKER_MODELS)
    sandbox.reset()
    yield sandbox
    sandbox.reset()
    close_breakers(client, BREAKER_MODELS)
    sandbox.reset()


def _messages_client(stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.edge_url, api_key=key, max_retries=0)


def _responses_client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def _price(model_id: str, input_tokens: int, output_tokens: int) -> int:
    """One call's bill: the list price of the usage the client received, marked up 40 %."""
    model = load_catalog().chat(model_id)
    assert model is not None
    upstream = (
        input_tokens * model.input_nano_usd_per_token
        + output_tokens * model.output_nano_usd_per_token
    )
    return apply_markup(upstream, 4000)


def _settled_balance(base_url: str, key: str) -> int:
    return parse_usd(wait_until_settled(base_url, key)["account"]["balance_usd"])


@pytest.mark.parametrize("model", OPENROUTER_MODELS)
def test_an_openrouter_model_through_both_ingresses_is_billed_exactly(
    stack: Stack, admin: httpx.Client, base_url: str, healed: Sandbox, model: str
) -> None:
    key = create_key(admin, f"openrouter-{model}", credits_usd=f"{CREDITS_USD}.00")["key"]
    responses = _responses_client(base_url, key)
    messages = _messages_client(stack, key)
    expected = 0

    raw = responses.responses.with_raw_response.create(
        model=model, input="Route me", extra_body=NO_FALLBACKS
    )
    assert (raw.headers["x-aig-provider"], raw.headers["x-aig-model"]) == ("openrouter", model)
    plain = raw.parse()
    assert plain.status == "completed" and plain.model == model
    assert plain.output_text.startswith('Sandbox answer to "Route me"')
    expected += _price(model, plain.usage.input_tokens, plain.usage.output_tokens)

    events = list(
        responses.responses.create(
            model=model, input="Stream me", stream=True, extra_body=NO_FALLBACKS
        )
    )
    assert events[-1].type == "response.completed"
    streamed = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith('Sandbox answer to "Stream me"') and streamed.output_text == text
    expected += _price(model, streamed.usage.input_tokens, streamed.usage.output_tokens)

    raw_message = messages.messages.with_raw_response.create(
        model=model,
        max_tokens=300,
        messages=[{"role": "user", "content": "Route me"}],
        extra_body=NO_FALLBACKS,
    )
    assert raw_message.headers["x-aig-provider"] == "openrouter"
    message = raw_message.parse()
    assert message.model == model and message.stop_reason == "end_turn"
    assert message.content[0].text.startswith('Sandbox answer to "Route me"')
    expected += _price(model, message.usage.input_tokens, message.usage.output_tokens)

    with messages.messages.stream(
        model=model,
        max_tokens=300,
        messages=[{"role": "user", "content": "Stream me"}],
        extra_body=NO_FALLBACKS,
    ) as stream:
        assert stream.response.headers["x-aig-provider"] == "openrouter"
        deltas = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert deltas.startswith('Sandbox answer to "Stream me"')
    assert final.content[0].text == deltas and final.usage.output_tokens > 0
    expected += _price(model, final.usage.input_tokens, final.usage.output_tokens)

    # Every call went to OpenRouter under the catalog's upstream id, and nowhere else.
    sent = healed.requests("openrouter")
    upstream_id = {"gpt-5-codex": "openai/gpt-5-codex", "deepseek-chat": "deepseek/deepseek-chat"}
    assert [r["body"]["model"] for r in sent] == [upstream_id[model]] * 4

    [row] = wait_for_usage(base_url, key, 4)
    assert (row["model"], row["succeeded"], row["failed"]) == (model, 4, 0)
    assert parse_usd(row["billed_cost_usd"]) == expected
    assert _settled_balance(base_url, key) == CREDITS_USD * NANO_PER_USD - expected


def test_claude_through_responses_fails_over_from_a_5xx(
    admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    model = "claude-sonnet-4-5"
    key = create_key(admin, "responses-failover", credits_usd=f"{CREDITS_USD}.00")["key"]
    client = _responses_client(base_url, key)
    healed.fault("anthropic", 503)
    raw = client.responses.with_raw_response.create(model=model, input="Fail me over")
    assert (raw.headers["x-aig-provider"], raw.headers["x-aig-attempts"]) == ("openrouter", "2")
    answered = raw.parse()
    assert answered.status == "completed" and answered.model == model
    assert answered.output_text.startswith('Sandbox answer to "Fail me over"')

    healed.fault("anthropic", 529)
    stream = client.responses.create(model=model, input="Stream me over", stream=True)
    assert stream.response.headers["x-aig-provider"] == "openrouter"
    assert stream.response.headers["x-aig-attempts"] == "2"
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text.startswith('Sandbox answer to "Stream me over"')

    # Anthropic refused both; OpenRouter served both, as Claude.
    assert len(healed.requests("anthropic")) == 2
    sent = healed.requests("openrouter")
    assert [r["body"]["model"] for r in sent] == ["anthropic/claude-sonnet-4.5"] * 2
    [row] = wait_for_usage(base_url, key, 2)
    assert (row["model"], row["succeeded"], row["failed"]) == (model, 2, 0)
    assert row["failed_attempts"] == 2
    expected = _price(model, answered.usage.input_tokens, answered.usage.output_tokens)
    expected += _price(
        model, events[-1].response.usage.input_tokens, events[-1].response.usage.output_tokens
    )
    assert parse_usd(row["billed_cost_usd"]) == expected
    assert _settled_balance(base_url, key) == CREDITS_USD * NANO_PER_USD - expected


def test_gpt_through_messages_fails_over_from_a_5xx(
    stack: Stack, admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    model = "gpt-4o-mini"
    key = create_key(admin, "messages-failover", credits_usd=f"{CREDITS_USD}.00")["key"]
    client = _messages_client(stack, key)
    ask: Any = {"model": model, "max_tokens": 200}
    healed.fault("openai", 500)
    raw = client.messages.with_raw_response.create(
        **ask, messages=[{"role": "user", "content": "Fail me over"}]
    )
    assert (raw.headers["x-aig-provider"], raw.headers["x-aig-attempts"]) == ("openrouter", "2")
    answered = raw.parse()
    assert answered.model == model and answered.stop_reason == "end_turn"
    assert answered.content[0].text.startswith('Sandbox answer to "Fail me over"')

    healed.fault("openai", 502)
    with client.messages.stream(
        **ask, messages=[{"role": "user", "content": "Stream me over"}]
    ) as stream:
        assert stream.response.headers["x-aig-provider"] == "openrouter"
        assert stream.response.headers["x-aig-attempts"] == "2"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith('Sandbox answer to "Stream me over"')

    assert len(healed.requests("openai")) == 2
    sent = healed.requests("openrouter")
    assert [r["body"]["model"] for r in sent] == ["openai/gpt-4o-mini"] * 2
    [row] = wait_for_usage(base_url, key, 2)
    assert (row["model"], row["succeeded"], row["failed"]) == (model, 2, 0)
    assert row["failed_attempts"] == 2
    expected = _price(model, answered.usage.input_tokens, answered.usage.output_tokens)
    expected += _price(model, final.usage.input_tokens, final.usage.output_tokens)
    assert parse_usd(row["billed_cost_usd"]) == expected
    assert _settled_balance(base_url, key) == CREDITS_USD * NANO_PER_USD - expected


def _assert_failed_and_free(base_url: str, key: str, model: str) -> None:
    """The ledger holds one failed call at 0 cost, and the balance is untouched (the
    reservation released)."""
    [row] = wait_for_usage(base_url, key, 1)
    assert (row["model"], row["succeeded"], row["failed"]) == (model, 0, 1), row
    assert parse_usd(row["billed_cost_usd"]) == 0 == parse_usd(row["upstream_cost_usd"])
    me = wait_until_settled(base_url, key)
    assert parse_usd(me["account"]["balance_usd"]) == CREDITS_USD * NANO_PER_USD
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == 0
    assert sum(parse_usd(r["billed_cost_usd"]) for r in usage_rows(base_url, key)) == 0


def test_claude_through_responses_failing_everywhere_is_an_openai_error_billed_nothing(
    admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    model = "claude-sonnet-4-5"
    key = create_key(admin, "responses-all-fail", credits_usd=f"{CREDITS_USD}.00")["key"]
    for provider in CHAINS[model]:
        healed.fault(provider, 503)
    with pytest.raises(openai.APIStatusError) as failed:
        _responses_client(base_url, key).responses.create(model=model, input="Fail everywhere")
    assert failed.value.status_code >= 500
    body = failed.value.response.json()
    assert set(body) == {"error"}  # OpenAI's shape: no Anthropic "type": "error" envelope
    assert body["error"]["message"] and body["error"]["type"]
    assert failed.value.response.headers["x-request-id"].startswith("req_")
    for provider in CHAINS[model]:  # every route was tried, once
        assert len(healed.requests(provider)) == 1, provider
    _assert_failed_and_free(base_url, key, model)


def test_gpt_through_messages_failing_everywhere_is_an_anthropic_error_billed_nothing(
    stack: Stack, admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    model = "gpt-4o-mini"
    key = create_key(admin, "messages-all-fail", credits_usd=f"{CREDITS_USD}.00")["key"]
    for provider in CHAINS[model]:
        healed.fault(provider, 503)
    with pytest.raises(anthropic.APIStatusError) as failed:
        _messages_client(stack, key).messages.create(
            model=model, max_tokens=200, messages=[{"role": "user", "content": "Fail everywhere"}]
        )
    assert failed.value.status_code >= 500
    body: Any = failed.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] in ("api_error", "overloaded_error")
    assert body["error"]["message"]
    assert body["request_id"] == failed.value.response.headers["x-request-id"]
    for provider in CHAINS[model]:
        assert len(healed.requests(provider)) == 1, provider
    _assert_failed_and_free(base_url, key, model)
