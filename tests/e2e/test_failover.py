# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""Failover, circuit breakers and hedging against sandbox faults."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from aig_common.money import NANO_PER_USD, apply_markup, parse_usd
from catalog.models import load_catalog

from .conftest import (
    BREAKER_COOLDOWN_S,
    BREAKER_FAILURES,
    HEDGED_MODEL,
    Sandbox,
    close_breakers,
    create_key,
    list_price_nano_usd,
    wait_for_usage,
    wait_until_settled,
)
from .test_openai_sdk import WEATHER_TOOL

ASK = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "What is the weather in Oslo?"},
]


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """What must survive a failover untouched: everything but the upstream model id."""
    return {k: v for k, v in body.items() if k not in ("model", "stream_options")}


PRIMARY_PROVIDERS = {
    "gpt-4o-mini": "openai",
    "claude-sonnet-4-5": "anthropic",
    HEDGED_MODEL: "openai",
}


@pytest.fixture
def healed(sandbox: Sandbox, client: openai.OpenAI) -> Iterator[Sandbox]:
    """Every breaker closed before and after: failures of earlier tests do not leak in."""
    close_breakers(client, PRIMARY_PROVIDERS)
    sandbox.reset()
    yield sandbox
    sandbox.reset()
    close_breakers(client, PRIMARY_PROVIDERS)
    sandbox.reset()


def test_openai_outage_fails_over_with_the_same_request(
    admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    key = create_key(admin, "failover-billing")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    healed.fault("openai", 503, count=BREAKER_FAILURES)
    for _ in range(BREAKER_FAILURES):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto"
        )
        assert raw.headers["x-aig-provider"] == "openrouter"
        assert raw.headers["x-aig-attempts"] == "2"
        completion = raw.parse()
        assert completion.model == "gpt-4o-mini"
        assert completion.choices[0].finish_reason == "tool_calls"
    failed = healed.requests("openai")
    served = healed.requests("openrouter")
    assert len(failed) == len(served) == BREAKER_FAILURES
    for first, second in zip(failed, served, strict=True):
        assert _comparable(first["body"]) == _comparable(second["body"])
        assert second["body"]["model"] == "openai/gpt-4o-mini"

    # Billed once per call, for the attempt that served it; failed attempts cost nothing.
    [row] = wait_for_usage(base_url, key["key"], BREAKER_FAILURES)
    assert (row["calls"], row["succeeded"], row["failed"]) == (BREAKER_FAILURES,) * 2 + (0,)
    assert row["failed_attempts"] == BREAKER_FAILURES
    me = wait_until_settled(base_url, key["key"])
    assert me["key"]["caps"]["daily"]["spent_usd"] == row["billed_cost_usd"]


def test_fallback_is_billed_at_the_fallbacks_price(
    admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    key = create_key(admin, "fallback-price")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    healed.fault("openai", 503)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, extra_body={"aig": {"fallbacks": ["gemini-2.5-flash"]}}
    )
    assert raw.headers["x-aig-provider"] == "google"
    [row] = wait_for_usage(base_url, key["key"], 1)
    gemini = load_catalog().chat("gemini-2.5-flash")
    assert gemini is not None and row["model"] == "gemini-2.5-flash"
    upstream = (
        int(row["prompt_tokens"]) * gemini.input_nano_usd_per_token
        + int(row["completion_tokens"]) * gemini.output_nano_usd_per_token
    )
    assert parse_usd(row["upstream_cost_usd"]) == upstream
    assert parse_usd(row["billed_cost_usd"]) == apply_markup(upstream, 4000)


def test_open_breaker_skips_the_dead_provider(client: openai.OpenAI, healed: Sandbox) -> None:
    healed.fault("openai", 500, count=100)
    attempts = []
    for _ in range(BREAKER_FAILURES + 4):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
        assert raw.headers["x-aig-provider"] == "openrouter"
        attempts.append(raw.headers["x-aig-attempts"])
    # The first calls waited on OpenAI; once the breaker opened, calls went straight on.
    assert attempts == ["2"] * BREAKER_FAILURES + ["1"] * 4
    assert len(healed.requests("openai")) == BREAKER_FAILURES

    healed.reset()
    time.sleep(BREAKER_COOLDOWN_S + 0.2)
    probe = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    assert probe.headers["x-aig-provider"] == "openai"  # half-open probe succeeded: closed


def test_client_errors_are_never_retried(client: openai.OpenAI, healed: Sandbox) -> None:
    healed.fault("openai", 400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert healed.requests("openrouter") == []


def test_rate_limit_moves_to_another_provider(client: openai.OpenAI, healed: Sandbox) -> None:
    healed.fault("openai", 429)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    assert raw.headers["x-aig-provider"] == "openrouter"
    assert len(healed.requests("openai")) == 1


def test_overloaded_stream_fails_over_before_the_first_chunk(
    client: openai.OpenAI, edge: httpx.Client, healed: Sandbox
) -> None:
    healed.fault("anthropic", 529)
    with edge.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "claude-sonnet-4-5", "messages": ASK, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-aig-provider"] == "openrouter"
        assert response.headers["x-aig-attempts"] == "2"
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert not any("error" in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    healed.fault("anthropic", 529)
    with client.chat.completions.stream(model="claude-sonnet-4-5", messages=ASK) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content


def test_break_after_chunk_three_ends_with_a_clean_error(
    edge: httpx.Client, healed: Sandbox
) -> None:
    healed.fault("anthropic", 500, after_chunks=3)
    with edge.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "claude-sonnet-4-5", "messages": ASK, "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["message"] and error["type"] == "server_error"
    assert healed.requests("openrouter") == []  # too late to fail over: no second answer


def test_per_request_opt_out_and_override(client: openai.OpenAI, healed: Sandbox) -> None:
    healed.fault("openai", 503)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, extra_body={"aig": {"fallbacks": False}}
        )
    healed.fault("openai", 503)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, extra_body={"aig": {"fallbacks": ["gemini-2.5-flash"]}}
    )
    assert raw.headers["x-aig-provider"] == "google"
    assert "aig" not in healed.last_request("google")["body"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, extra_body={"aig": {"fallbacks": "yes"}}
        )


def test_hedged_model_answers_from_the_faster_route(client: openai.OpenAI, healed: Sandbox) -> None:
    healed.fault("openai", 200, delay_ms=5_000)  # OpenAI answers, but slowly
    raw = client.chat.completions.with_raw_response.create(model=HEDGED_MODEL, messages=ASK)
    assert raw.headers["x-aig-provider"] == "openrouter"
    assert raw.headers["x-aig-attempts"] == "2"
    assert raw.parse().choices[0].message.content


def test_failed_attempts_add_nothing_to_spend(
    admin: httpx.Client, base_url: str, healed: Sandbox
) -> None:
    """Two routes fail, the third serves: the call costs the third's list price for the
    usage the client received, and the failed attempts add nothing to the bill or a cap."""
    key = create_key(admin, "failover-spend", credits_usd="10.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    healed.fault("openai", 503)
    healed.fault("openrouter", 503)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, max_tokens=50
    )
    assert (raw.headers["x-aig-provider"], raw.headers["x-aig-attempts"]) == ("google", "3")
    usage = raw.parse().usage
    assert usage is not None and usage.completion_tokens > 0
    billed = apply_markup(list_price_nano_usd("gemini-2.5-flash-lite", usage), 4000)

    [row] = wait_for_usage(base_url, key["key"], 1)
    assert (row["model"], row["failed_attempts"]) == ("gemini-2.5-flash-lite", 2)
    assert parse_usd(row["billed_cost_usd"]) == billed
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == billed
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed
