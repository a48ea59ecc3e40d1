# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""Usage events through the real Kafka broker into billing: ledger rows, exact debits,
no charge for failures, redelivery after a crash, a broker outage, tiers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import bpe_openai
import httpx
import openai
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from aig.events.v1 import events_pb2 as events
from aig_common.ids import uuid7
from aig_common.money import NANO_PER_USD, apply_markup, parse_usd
from aig_common.service_auth import service_headers
from catalog.models import load_catalog
from devstack.stack import Stack

from .conftest import (
    FAMILY_MODELS,
    Sandbox,
    create_key,
    list_price_nano_usd,
    sandbox_settings,
    usage_rows,
    wait_for_usage,
    wait_until_settled,
    worst_case_nano_usd,
)

ASK = [{"role": "user", "content": "Count my money"}]
NO_FALLBACKS = {"aig": {"fallbacks": False}}


def _me(base_url: str, key: str) -> dict[str, Any]:
    return dict(
        httpx.get(f"{base_url}/me", headers={"authorization": f"Bearer {key}"}, timeout=10).json()
    )


def test_calls_become_rows_and_exact_debits(
    admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    key = create_key(admin, "ledger", credits_usd="50.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    for model in FAMILY_MODELS.values():
        client.chat.completions.create(model=model, messages=ASK)
        assert list(client.chat.completions.create(model=model, messages=ASK, stream=True))
    client.embeddings.create(model="text-embedding-3-small", input="count me")
    failures = 0
    for provider, model in FAMILY_MODELS.items():
        sandbox.fault(provider, 503)
        try:
            client.chat.completions.create(model=model, messages=ASK, extra_body=NO_FALLBACKS)
        except openai.InternalServerError:
            failures += 1
    assert failures == 4
    successes = 2 * len(FAMILY_MODELS) + 1

    rows = wait_for_usage(base_url, key["key"], successes + failures)
    me = wait_until_settled(base_url, key["key"])
    assert sum(int(r["succeeded"]) for r in rows) == successes
    assert sum(int(r["failed"]) for r in rows) == failures
    billed = sum(parse_usd(r["billed_cost_usd"]) for r in rows)
    assert billed > 0
    assert parse_usd(me["account"]["balance_usd"]) == 50 * NANO_PER_USD - billed
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == billed


def test_streams_and_embeddings_are_billed_at_list_price_for_the_usage_received(
    admin: httpx.Client, base_url: str
) -> None:
    """Each family's stream and an embeddings call, priced independently of the router:
    the catalog's list price for the usage the client itself received, marked up 40 %."""
    key = create_key(admin, "list-price", credits_usd="10.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    expected: dict[str, int] = {}
    for model in FAMILY_MODELS.values():
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=ASK,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=NO_FALLBACKS,
            )
        )
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens > 0, model
        expected[model] = apply_markup(list_price_nano_usd(model, usage), 4000)
    embedded = client.embeddings.create(
        model="text-embedding-3-small", input=["count me", "and me too"]
    )
    embedding = load_catalog().embedding("text-embedding-3-small")
    assert embedding is not None and embedded.usage.prompt_tokens > 0
    expected["text-embedding-3-small"] = apply_markup(
        embedded.usage.prompt_tokens * embedding.input_nano_usd_per_token, 4000
    )

    rows = wait_for_usage(base_url, key["key"], len(expected))
    assert {row["model"]: parse_usd(row["billed_cost_usd"]) for row in rows} == expected
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - sum(expected.values())


def test_usage_past_max_tokens_is_billed_at_most_the_reservation(
    stack: Stack, admin: httpx.Client, base_url: str
) -> None:
    """The router's clamp (billed <= reserved): a provider that answers past max_tokens and
    reports it is billed the reservation, never more, unary and streamed."""
    body = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 20, **NO_FALLBACKS}
    reserved = worst_case_nano_usd(body)
    key = create_key(admin, "overrun", credits_usd="10.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    request = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 20}
    with sandbox_settings(stack, answer_tokens=1000, max_tokens_overrun=400):
        unary = client.chat.completions.create(**request, extra_body=NO_FALLBACKS).usage
        chunks = list(
            client.chat.completions.create(
                **request,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=NO_FALLBACKS,
            )
        )
    for usage in (unary, chunks[-1].usage):
        assert usage is not None and usage.completion_tokens == 420  # the provider overran
        assert apply_markup(list_price_nano_usd("gpt-4o-mini", usage), 4000) > reserved

    [row] = wait_for_usage(base_url, key["key"], 2)
    assert parse_usd(row["billed_cost_usd"]) == 2 * reserved
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == 2 * reserved
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - 2 * reserved


def _billing_events(stack: Stack, result: str) -> float:
    """billing's own count of usage events by result (settled, duplicate, …) since it started."""
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports.billing}/metrics", timeout=10)
    metrics.raise_for_status()
    for family in text_string_to_metric_families(metrics.text):
        for sample in family.samples:
            if sample.name == "aig_billing_events_total" and sample.labels["result"] == result:
                return float(sample.value)
    return 0.0


def test_billing_crash_before_commit_changes_nothing(
    stack: Stack, admin: httpx.Client, base_url: str
) -> None:
    key = create_key(admin, "crash", credits_usd="10.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    billing = stack.service("billing")
    billing.stop()
    crashing = replace(
        billing, env={**billing.env, "AIG_BILLING_CRASH_AFTER_WRITE": "1"}, process=None
    )
    try:
        crashing.start()
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        assert crashing.process is not None
        assert crashing.process.wait(60) == 17  # wrote ledger and control DB, died before commit
    finally:
        crashing.stop()
        billing.start()  # whatever happened above, the stack keeps its billing
        billing.wait_ready()
    # The restarted consumer is given the partition once the dead member's session expires,
    # then the uncommitted batch again. Only that redelivery proves anything: the crashed
    # process had already written both the ledger and the balance.
    deadline = time.monotonic() + 120
    while _billing_events(stack, "duplicate") < 1:
        assert time.monotonic() < deadline, "billing never saw the crashed batch again"
        time.sleep(0.5)
    assert _billing_events(stack, "settled") == 0  # the redelivered event changed nothing
    rows = usage_rows(base_url, key["key"])
    assert sum(int(r["calls"]) for r in rows) == 1
    billed = parse_usd(rows[0]["billed_cost_usd"])
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["account"]["balance_usd"]) == 10 * NANO_PER_USD - billed
    assert parse_usd(me["key"]["caps"]["daily"]["spent_usd"]) == billed


# The outage is Kafka's and the producers' (spool, resend): one control DB is enough; the
# crash test above proves PostgreSQL's settlement under redelivery.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_broker_outage_loses_no_usage(stack: Stack, admin: httpx.Client, base_url: str) -> None:
    key = create_key(admin, "outage", credits_usd="10.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    assert stack.kafka is not None
    stack.kafka.stop()
    try:
        for _ in range(5):
            assert client.chat.completions.create(model="gpt-4o-mini", messages=ASK).choices
    finally:
        stack.kafka.start()
        stack.kafka.wait_ready()
    rows = wait_for_usage(base_url, key["key"], 5, timeout_s=120)
    assert sum(int(r["succeeded"]) for r in rows) == 5
    wait_until_settled(base_url, key["key"], timeout_s=120)


async def _publish(bootstrap: str, usage: list[events.UsageEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for event in usage:
            await producer.send_and_wait(
                "aig.usage.v1", event.SerializeToString(), key=event.account_id.encode()
            )
    finally:
        await producer.stop()


def _spend_event(account_id: str, key_id: str, usd: int, at: datetime) -> events.UsageEvent:
    return events.UsageEvent(
        event_id=str(uuid7()),
        occurred_at_ms=int(at.timestamp() * 1000),
        account_id=account_id,
        key_id=key_id,
        endpoint="chat.completions",
        model="gpt-4o",
        provider="openai",
        outcome=events.CALL_OUTCOME_SUCCEEDED,
        http_status=200,
        upstream_cost_nano_usd=usd * NANO_PER_USD * 10 // 14,
        markup_basis_points=4000,
        billed_cost_nano_usd=usd * NANO_PER_USD,
    )


def test_tier_follows_rolling_30_day_spend(
    stack: Stack, admin: httpx.Client, base_url: str
) -> None:
    key = create_key(admin, "tiered", credits_usd="2000.00")
    me = _me(base_url, key["key"])
    assert (me["tier"]["name"], me["tier"]["markup_percent"]) == ("starter", "40")
    now = datetime.now(UTC)
    history = [
        _spend_event(key["account_id"], key["id"], 30, now - timedelta(days=2)),
        _spend_event(key["account_id"], key["id"], 25, now - timedelta(days=10)),
        # Older than 30 days: does not count toward the tier.
        _spend_event(key["account_id"], key["id"], 900, now - timedelta(days=31)),
    ]
    assert stack.kafka is not None
    asyncio.run(_publish(stack.kafka.bootstrap_servers, history))
    wait_for_usage(base_url, key["key"], 3)

    recompute = admin.post("/tiers/recompute")
    assert recompute.status_code == 200, recompute.text
    me = _me(base_url, key["key"])
    assert me["tier"]["name"] == "growth"
    assert me["tier"]["markup_percent"] == "30"
    assert me["tier"]["rolling_30d_spend_usd"] == "55.00"
    assert me["tier"]["computed_at"] and me["tier"]["next_recompute_at"]

    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    client.chat.completions.create(model="claude-sonnet-4-5", messages=ASK, extra_body=NO_FALLBACKS)
    rows = wait_for_usage(base_url, key["key"], 4)
    claude = next(r for r in rows if r["model"] == "claude-sonnet-4-5")
    upstream = parse_usd(claude["upstream_cost_usd"])
    assert upstream > 0
    assert parse_usd(claude["billed_cost_usd"]) == apply_markup(upstream, 3000)


def _calls_of(stack: Stack, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The account's calls as billing's ledger holds them, one row each (internal API)."""
    answer = httpx.get(
        f"http://127.0.0.1:{stack.ports.billing}/internal/v1/calls",
        params={
            "account_id": account_id,
            "start": "2000-01-01T00:00:00+00:00",
            "end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "limit": str(limit),
        },
        headers=service_headers(stack.service_token),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def _stream_pieces(base_url: str, key: str, body: dict[str, Any], leave_early: bool) -> list[str]:
    """The content of each chunk a stream delivers; with `leave_early`, the client hangs up
    after the first one that carries text."""
    pieces: list[str] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            f"{base_url}/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line.removeprefix("data: "))["choices"]:
                    if choice["delta"].get("content"):
                        pieces.append(choice["delta"]["content"])
            if pieces and leave_early:
                break
    return pieces


def test_a_stream_the_client_leaves_pays_for_its_prompt_and_what_it_produced(
    stack: Stack, admin: httpx.Client, base_url: str
) -> None:
    """The provider bills the prompt and the output it made before the router closed the
    upstream stream; the customer pays that (with markup), not nothing and not the rest."""
    key = create_key(admin, "abandoned-stream", credits_usd="5.00")
    reader = create_key(admin, "whole-stream", credits_usd="5.00")
    body = {"model": "gpt-4o-mini", "messages": ASK, "stream": True, **NO_FALLBACKS}
    with sandbox_settings(stack, chunk_interval_ms=200, stream_chunks=12, answer_tokens=120):
        # The sandbox answers a prompt the same way every time: read it all once, chunk by
        # chunk, then leave the same stream after its first content chunk.
        whole = _stream_pieces(base_url, reader["key"], body, leave_early=False)
        seen = _stream_pieces(base_url, key["key"], body, leave_early=True)
    assert len(whole) == 12 and seen == whole[:1]
    me = wait_until_settled(base_url, key["key"])
    (call,) = _calls_of(stack, key["account_id"])
    assert (call["http_status"], call["error_code"]) == (499, "client_closed"), call
    model = load_catalog().chat("gpt-4o-mini")
    assert model is not None
    # gpt-4o-mini's tokenizer is public (o200k_base): the prompt as OpenAI's chat format
    # counts it (3 tokens per message, role and content, 3 priming the reply), the output as
    # the text the router relayed, counted here with the encoding itself. The router relays
    # what it has until the edge notices the client has gone (at its next write), so that is
    # the first chunk or a few more, never the whole answer.
    o200k = bpe_openai.get_encoding("o200k_base")
    prompt = sum(3 + len(o200k.encode(m["role"])) + len(o200k.encode(m["content"])) for m in ASK)
    prompt += 3
    produced = int(call["completion_tokens"])
    relayed = {len(o200k.encode("".join(whole[:chunks]))): chunks for chunks in range(1, 7)}
    assert produced in relayed, (produced, relayed)
    assert int(call["prompt_tokens"]) == prompt
    upstream = prompt * model.input_nano_usd_per_token + produced * model.output_nano_usd_per_token
    billed = apply_markup(upstream, 4000)
    assert billed > 0 and parse_usd(call["billed_cost_usd"]) == billed
    assert parse_usd(me["account"]["balance_usd"]) == 5 * NANO_PER_USD - billed


def test_a_call_the_client_leaves_is_cancelled_upstream_and_pays_for_its_prompt(
    stack: Stack, admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    """A non-streamed call whose client hangs up: the edge cancels it, the router closes the
    upstream request (so the provider makes nothing more) and bills the prompt the provider
    was sent; the answer never came, so no output is billed."""
    key = create_key(admin, "abandoned-unary", credits_usd="5.00")
    provider_delay_ms = 120_000
    sandbox.fault("openai", 200, delay_ms=provider_delay_ms)
    body = {"model": "gpt-4o-mini", "messages": ASK, **NO_FALLBACKS}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base_url}/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key['key']}"},
            timeout=httpx.Timeout(10, read=2),
        )
    # Settled long before the provider would have answered: the call ended with the client.
    me = wait_until_settled(base_url, key["key"])
    (call,) = _calls_of(stack, key["account_id"])
    assert (call["http_status"], call["error_code"]) == (499, "client_closed"), call
    assert int(call["latency_ms"]) < provider_delay_ms
    assert sandbox.last_request("openai")["body"]["messages"] == ASK
    model = load_catalog().chat("gpt-4o-mini")
    assert model is not None
    o200k = bpe_openai.get_encoding("o200k_base")
    prompt = sum(3 + len(o200k.encode(m["role"])) + len(o200k.encode(m["content"])) for m in ASK)
    prompt += 3
    assert (int(call["prompt_tokens"]), int(call["completion_tokens"])) == (prompt, 0)
    billed = apply_markup(prompt * model.input_nano_usd_per_token, 4000)
    assert billed > 0 and parse_usd(call["billed_cost_usd"]) == billed
    assert parse_usd(me["account"]["balance_usd"]) == 5 * NANO_PER_USD - billed
