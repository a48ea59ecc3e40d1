"""Every service's /metrics through the real stack: calls move the series docs/metrics.md
names, with the labels it names (bounded: route templates, catalog ids, providers, codes).

SQLite only: nothing here depends on the control DB's engine, and each stack's processes
count from zero, so every assertion is a difference before/after the calls it makes."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import free_port
from devstack.stack import Stack

from .conftest import Sandbox, close_breakers, create_key, wait_for_task
from .test_failover import PRIMARY_PROVIDERS
from .test_webhooks import publish, task_event, wait_delivery

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def labelsets(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples if sample == name]


def router_ops(stack: Stack) -> str:
    """Where the router's metrics are served: its own ops port, or the edge's /metrics when
    the router runs in the edge's process."""
    if stack.in_process_router:
        return stack.edge_url
    return f"http://127.0.0.1:{stack.ports.router_ops}"


def service(stack: Stack, name: str) -> str:
    return f"http://127.0.0.1:{getattr(stack.ports, name)}"


def test_edge_labels_responses_by_route_model_provider_and_status(
    stack: Stack, client: openai.OpenAI, edge: httpx.Client
) -> None:
    before = scrape(stack.edge_url)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    provider = raw.headers["x-aig-provider"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model-" + uuid.uuid4().hex, messages=ASK)
    assert edge.get("/v1/models/gpt-4o-mini").status_code == 200
    assert edge.get(f"/nowhere/{uuid.uuid4().hex}").status_code == 404
    after = scrape(stack.edge_url)

    def moved(**labels: str) -> float:
        name = "aig_edge_http_responses_total"
        return value(after, name, **labels) - value(before, name, **labels)

    chat = "/v1/chat/completions"
    assert moved(route=chat, model="gpt-4o-mini", provider=provider, status="200") == 1
    # A client's model string never becomes a label.
    assert moved(route=chat, model="other", provider="none", status="404") == 1
    model_route = "/v1/models/{model_id}"
    assert moved(route=model_route, model="other", provider="none", status="200") == 1
    assert moved(route="other", model="other", provider="none", status="404") == 1
    routes = {labels["route"] for labels in labelsets(after, "aig_edge_http_responses_total")}
    assert all(route == "other" or route.startswith("/v1") for route in routes)
    assert not any("nowhere" in route for route in routes)

    # One unary overhead observation per chat call the router answered.
    count = "aig_edge_overhead_seconds_count"
    assert value(after, count, mode="unary") - value(before, count, mode="unary") == 1
    assert value(after, "aig_edge_admissions_total", outcome="admitted") - value(
        before, "aig_edge_admissions_total", outcome="admitted"
    ) == pytest.approx(1)


def test_a_402_is_counted_by_its_code(stack: Stack, admin: httpx.Client, base_url: str) -> None:
    key = create_key(admin, "metrics-cap")
    admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": "0"}).raise_for_status()
    capped = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    before = scrape(stack.edge_url)
    with pytest.raises(openai.APIStatusError) as caught:
        capped.chat.completions.create(model="gpt-4o-mini", messages=ASK, max_tokens=50)
    assert caught.value.status_code == 402
    after = scrape(stack.edge_url)

    name = "aig_edge_payment_required_total"
    assert value(after, name, code="key_daily_cap") - value(before, name, code="key_daily_cap") == 1
    # Every code exists from the start, at zero or more, so dashboards see them all.
    codes = {labels["code"] for labels in labelsets(after, name)}
    assert {"insufficient_credits", "account_monthly_cap", "workspace_daily_cap"} <= codes
    refused = "aig_edge_admissions_total"
    assert value(after, refused, outcome="refused") - value(before, refused, outcome="refused") == 1
    responses = "aig_edge_http_responses_total"
    labels = {"route": "/v1/chat/completions", "model": "gpt-4o-mini", "provider": "none"}
    assert (
        value(after, responses, **labels, status="402")
        - value(before, responses, **labels, status="402")
        == 1
    )


def test_a_stream_records_one_time_to_first_token(stack: Stack, client: openai.OpenAI) -> None:
    before = scrape(stack.edge_url)
    chunks = list(
        client.chat.completions.create(model="claude-sonnet-4-5", messages=ASK, stream=True)
    )
    assert chunks
    after = scrape(stack.edge_url)
    ttft = "aig_edge_time_to_first_token_seconds_count"
    assert value(after, ttft) - value(before, ttft) == 1
    assert value(after, "aig_edge_time_to_first_token_seconds_sum") > value(
        before, "aig_edge_time_to_first_token_seconds_sum"
    )
    overhead = "aig_edge_overhead_seconds_count"
    assert value(after, overhead, mode="stream") - value(before, overhead, mode="stream") == 1
    assert value(after, overhead, mode="unary") == value(before, overhead, mode="unary")


def test_a_provider_fault_moves_failovers_and_attempt_latency(
    stack: Stack, client: openai.OpenAI, sandbox: Sandbox
) -> None:
    # An open breaker would skip openai instead of failing over.
    close_breakers(client, PRIMARY_PROVIDERS)
    before = scrape(router_ops(stack))
    sandbox.fault("openai", 503)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    assert raw.headers["x-aig-attempts"] == "2"
    served_by = raw.headers["x-aig-provider"]
    assert served_by != "openai"
    after = scrape(router_ops(stack))

    failovers = "aig_router_failovers_total"
    assert (
        value(after, failovers, provider="openai") - value(before, failovers, provider="openai")
        == 1
    )
    attempts = "aig_router_upstream_attempt_seconds_count"
    for provider, outcome in (("openai", "error"), (served_by, "ok")):
        moved = value(after, attempts, provider=provider, outcome=outcome) - value(
            before, attempts, provider=provider, outcome=outcome
        )
        assert moved == 1, (provider, outcome)
    # The breaker gauge is there for the provider that failed (one failure: still closed).
    assert value(after, "aig_router_breaker_open", breaker="openai") == 0


def test_billing_reports_batches_write_lag_consumer_lag_and_reservations(
    stack: Stack, client: openai.OpenAI, sandbox: Sandbox
) -> None:
    billing = service(stack, "billing")
    before = scrape(billing)
    # A slow call holds its reservation long enough for billing's count to see it.
    sandbox.fault("openai", 200, delay_ms=6_000)
    slow = threading.Thread(
        target=client.chat.completions.create,
        kwargs={
            "model": "gpt-4o-mini",
            "messages": ASK,
            "extra_body": {"aig": {"fallbacks": False}},
        },
    )
    slow.start()
    held = 0.0
    deadline = time.monotonic() + 30
    while slow.is_alive() and held < 1 and time.monotonic() < deadline:
        held = value(scrape(billing), "aig_reservations_in_flight")
        time.sleep(0.2)
    slow.join(60)
    assert held >= 1
    assert value(scrape(billing), "aig_reservations_in_flight_nano_usd") >= 0

    # Its usage event is settled: one more batch, one more write-lag observation. Both are
    # awaited: `before` may have been scraped in the middle of an earlier batch (its size
    # observed, its lag not yet), so either may move first.
    deadline = time.monotonic() + 60
    lag = "aig_billing_ledger_write_lag_seconds_count"
    batches = "aig_billing_batch_size_count"
    after = scrape(billing)
    while value(after, lag) <= value(before, lag) or value(after, batches) <= value(
        before, batches
    ):
        assert time.monotonic() < deadline, "billing settled nothing"
        time.sleep(0.2)
        after = scrape(billing)
    assert value(after, "aig_billing_batch_size_sum") >= value(
        after, "aig_billing_batch_size_count"
    )
    partitions = labelsets(after, "aig_billing_consumer_lag")
    assert partitions and all(labels["partition"].isdigit() for labels in partitions)
    assert all(value(after, "aig_billing_consumer_lag", **p) >= 0 for p in partitions)


def test_jobs_counts_task_states_by_provider(
    stack: Stack, admin: httpx.Client, sandbox: Sandbox
) -> None:
    jobs = service(stack, "jobs")
    before = scrape(jobs)
    key = create_key(admin, "metrics-jobs", credits_usd="10.00")["key"]
    with httpx.Client(
        base_url=f"{stack.edge_url}/v1", headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        created = http.post(
            "/jobs/createTask",
            json={"model": "flux-kontext-pro", "input": {"prompt": "a metric fox"}},
        )
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["taskId"]
        record = wait_for_task(http, task_id, {"success", "fail"})
    assert record["state"] == "success"
    after = scrape(jobs)
    name = "aig_jobs_transitions_total"
    success = [labels for labels in labelsets(after, name) if labels["state"] == "success"]
    assert any(
        value(after, name, **labels) - value(before, name, **labels) >= 1 for labels in success
    )
    assert all(labels["provider"] for labels in success)


def test_webhooks_count_an_unreachable_receiver_and_the_dead_letter(
    stack: Stack, admin: httpx.Client
) -> None:
    webhooks = service(stack, "webhooks")
    before = scrape(webhooks)
    customer = create_key(admin, "metrics-webhooks")
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    task_id = "task_" + uuid.uuid4().hex
    publish(stack, task_event(customer["account_id"], task_id, closed))
    delivery = wait_delivery(stack, customer["key"], task_id, until={"dead"}, timeout_s=60)
    after = scrape(webhooks)

    sends = "aig_webhook_sends_total"
    moved = value(after, sends, result="unreachable") - value(before, sends, result="unreachable")
    assert moved == delivery["attempts"] >= 2
    assert value(after, sends, result="2xx") == value(before, sends, result="2xx")
    dead = "aig_webhook_dead_letters_total"
    assert value(after, dead) - value(before, dead) == 1
