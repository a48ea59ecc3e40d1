"""One trace per call across the services, exported over OTLP/HTTP, with no secret in it;
and no secret in any service's log.

A stack of its own (SQLite) with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-test OTLP
receiver; the session stacks run with tracing off, as a default install does."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devstack.stack import Stack, StackPorts

from .conftest import (
    EXTRA_PROVIDER_KEYS,
    LOCAL_MODEL,
    Sandbox,
    _session_stack_env,
    admin_client,
    create_key,
    start_stack,
    wait_for_usage,
    wait_until_settled,
)
from .otlp_receiver import OtlpReceiver, ReceivedSpan

SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP Span.SpanKind values


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traced_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: OtlpReceiver,
) -> Iterator[Stack]:
    def env(var_dir: Path, ports: StackPorts) -> dict[str, str]:
        return {
            **_session_stack_env(var_dir, ports),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            # Export within a tenth of a second rather than the SDK's default five.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # Production's log shape, so the log checks below read what a pipeline would.
            "AIG_LOG_FORMAT": "json",
        }

    running = start_stack(request, tmp_path_factory, "sqlite", env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(traced_stack: Stack) -> Iterator[httpx.Client]:
    with admin_client(traced_stack) as client:
        yield client


@pytest.fixture(scope="module")
def created_key(admin: httpx.Client) -> dict[str, Any]:
    return create_key(admin, "tracing")


@pytest.fixture(scope="module")
def api_key(created_key: dict[str, Any]) -> str:
    return str(created_key["key"])


@pytest.fixture(scope="module")
def client(traced_stack: Stack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{traced_stack.edge_url}/v1", api_key=api_key, max_retries=0)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Every prompt text sent in this module: none may reach a span or a log."""
    return []


def _prompt(prompts: list[str]) -> str:
    text = f"Describe the secret garden {secrets.token_hex(8)} in one line."
    prompts.append(text)
    return text


def _in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


def _call_trace(spans: list[ReceivedSpan], request_id: str) -> list[ReceivedSpan]:
    """The trace of the call the edge answered with this x-request-id (empty until its span
    arrived)."""
    edge = [
        s
        for s in spans
        if s.service == "aig-edge" and s.attributes.get("aig.request_id") == request_id
    ]
    return _in_trace(spans, edge[0].trace_id) if edge else []


def _span_text(span: ReceivedSpan) -> str:
    return "\n".join([span.name, span.other_text, *map(str, span.attributes.values())])


def test_one_call_is_one_trace_from_edge_to_billing(
    traced_stack: Stack,
    client: openai.OpenAI,
    api_key: str,
    receiver: OtlpReceiver,
    prompts: list[str],
) -> None:
    sandbox = Sandbox(traced_stack.sandbox_url)
    sandbox.reset()
    # The primary route fails once: the call is served by its fallback on the second attempt.
    sandbox.fault("openai", 500)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": _prompt(prompts)}],
        max_tokens=20,
    )
    assert raw.headers["x-aig-attempts"] == "2"
    request_id = raw.headers["x-request-id"]
    wait_until_settled(f"{traced_stack.edge_url}/v1", api_key)

    def complete(spans: list[ReceivedSpan]) -> bool:
        services = {s.service for s in _call_trace(spans, request_id)}
        return services >= {"aig-edge", "aig-router", "aig-billing"}

    trace = _call_trace(receiver.wait_for(complete), request_id)
    (edge,) = [s for s in trace if s.service == "aig-edge"]
    assert edge.kind == SERVER
    assert edge.name == "POST /v1/chat/completions"
    assert edge.attributes["http.response.status_code"] == 200
    by_id = {span.span_id: span for span in trace}

    (router,) = [s for s in trace if s.service == "aig-router" and s.kind == SERVER]
    assert router.name == "aig.router.v1.Router/ChatCompletion"
    assert router.parent_span_id == edge.span_id
    assert router.attributes["aig.request_id"] == request_id
    assert router.attributes["aig.model"] == "gpt-4o-mini"
    assert router.attributes["aig.provider"] == "openrouter"
    assert router.attributes["aig.attempts"] == 2

    attempts = sorted(
        (s for s in trace if s.service == "aig-router" and s.kind == CLIENT),
        key=lambda s: s.attributes["aig.attempt"],
    )
    assert [s.parent_span_id for s in attempts] == [router.span_id] * 2
    described = [
        {
            key: s.attributes[key]
            for key in (
                "aig.attempt",
                "aig.provider",
                "aig.model",
                "aig.outcome",
                "http.response.status_code",
            )
        }
        for s in attempts
    ]
    assert described == [
        {
            "aig.attempt": 1,
            "aig.provider": "openai",
            "aig.model": "gpt-4o-mini",
            "aig.outcome": "error",
            "http.response.status_code": 500,
        },
        {
            "aig.attempt": 2,
            "aig.provider": "openrouter",
            "aig.model": "gpt-4o-mini",
            "aig.outcome": "ok",
            "http.response.status_code": 200,
        },
    ]

    # The usage event carried the router's context through Kafka to the settlement.
    (settle,) = [s for s in trace if s.service == "aig-billing"]
    assert settle.kind == CONSUMER
    assert by_id[settle.parent_span_id] is router
    assert settle.attributes["aig.request_id"] == request_id
    assert settle.attributes["aig.billed_nano_usd"] > 0

    # The router's log says why the call took two attempts, in a line that leads to both
    # the request and its trace.
    (failed,) = [
        line
        for line in _json_log(traced_stack, "router")
        if line.get("request_id") == request_id and line["message"].startswith("upstream attempt")
    ]
    assert failed["level"] == "WARNING"
    assert failed["message"] == (
        "upstream attempt 1 failed: provider=openai model=gpt-4o-mini status=500 (UpstreamError)"
    )
    assert failed["trace_id"] == edge.trace_id
    assert failed["span_id"] == attempts[0].span_id


SERVICES_LOGGING_JSON = ("edge", "router", "billing", "jobs", "webhooks")


def _json_log(stack: Stack, service: str) -> list[dict[str, Any]]:
    """A service's log, one JSON object per line (AIG_LOG_FORMAT=json); any other line fails."""
    lines = (stack.var_dir / "logs" / f"{service}.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    for entry in entries:
        assert {"ts", "level", "service", "logger", "message"} <= entry.keys(), entry
        assert entry["service"] == service
    return entries


def test_a_stream_is_one_trace_too(
    traced_stack: Stack,
    client: openai.OpenAI,
    api_key: str,
    receiver: OtlpReceiver,
    prompts: list[str],
) -> None:
    """The router's streaming handler keeps its span current across the stream's yields."""
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": _prompt(prompts)}],
        max_tokens=9,
        stream=True,
    )
    assert list(raw.parse())
    request_id = raw.headers["x-request-id"]

    trace = _call_trace(
        receiver.wait_for(
            lambda spans: any(s.service == "aig-billing" for s in _call_trace(spans, request_id))
        ),
        request_id,
    )
    (edge,) = [s for s in trace if s.service == "aig-edge"]
    (router,) = [s for s in trace if s.service == "aig-router" and s.kind == SERVER]
    (attempt,) = [s for s in trace if s.kind == CLIENT]
    (settle,) = [s for s in trace if s.service == "aig-billing"]
    assert router.name == "aig.router.v1.Router/StreamChatCompletion"
    assert router.parent_span_id == edge.span_id
    assert attempt.parent_span_id == settle.parent_span_id == router.span_id
    assert router.attributes["aig.status"] == 200
    assert attempt.attributes["aig.provider"] == "anthropic"
    assert attempt.attributes["aig.outcome"] == "ok"


def test_a_media_task_is_one_trace_from_create_task_to_webhooks_and_billing(
    traced_stack: Stack, api_key: str, receiver: OtlpReceiver, prompts: list[str]
) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    body = {
        "model": "flux-kontext-pro",
        "callBackUrl": f"{receiver.endpoint}/callback",
        "input": {"prompt": _prompt(prompts)},
    }
    with httpx.Client(base_url=f"{traced_stack.edge_url}/v1", headers=headers, timeout=30) as api:
        created = api.post("/jobs/createTask", json=body)
        assert created.status_code == 200, created.text
    task_id = created.json()["data"]["taskId"]
    request_id = created.headers["x-request-id"]

    def task_trace(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return _call_trace(spans, request_id)

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in task_trace(spans)}
        return {"webhooks intake", "billing settle"} <= names and any(
            s.name == "jobs task" for s in task_trace(spans)
        )

    trace = task_trace(receiver.wait_for(complete, timeout_s=60))
    (edge,) = [s for s in trace if s.service == "aig-edge"]
    assert edge.name == "POST /v1/jobs/createTask"
    (follower,) = [s for s in trace if s.name == "jobs task"]
    assert follower.service == "aig-jobs" and follower.parent_span_id == edge.span_id
    assert follower.attributes["aig.task_id"] == task_id
    intakes = [s for s in trace if s.name == "webhooks intake"]
    assert {s.service for s in intakes} == {"aig-webhooks"}
    assert {s.parent_span_id for s in intakes} == {follower.span_id}
    assert any(s.attributes["aig.deliverable"] for s in intakes)  # the terminal state
    (settle,) = [s for s in trace if s.name == "billing settle"]
    assert settle.service == "aig-billing" and settle.parent_span_id == follower.span_id


def test_no_secret_in_a_span_or_a_log(
    traced_stack: Stack,
    client: openai.OpenAI,
    admin: httpx.Client,
    created_key: dict[str, Any],
    api_key: str,
    receiver: OtlpReceiver,
    prompts: list[str],
) -> None:
    """A success, a stream, a provider credential in use, a signed webhook (the test above),
    and every error path a client can reach: wrong key, unaffordable call (402), upstream
    500 with no fallback."""
    sandbox = Sandbox(traced_stack.sandbox_url)
    sandbox.reset()
    base_url = f"{traced_stack.edge_url}/v1"
    client.chat.completions.create(
        model=LOCAL_MODEL, messages=[{"role": "user", "content": _prompt(prompts)}], max_tokens=9
    )
    stream = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": _prompt(prompts)}],
        max_tokens=9,
        stream=True,
    )
    assert list(stream)

    wrong_key = api_key[:-6] + "Zz9Zz9"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key=wrong_key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": _prompt(prompts)}]
        )
    poor_key = str(create_key(admin, "poor", credits_usd="0.00")["key"])
    with pytest.raises(openai.APIStatusError) as refused:
        openai.OpenAI(base_url=base_url, api_key=poor_key, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": _prompt(prompts)}]
        )
    assert refused.value.status_code == 402
    sandbox.fault("openai", 500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": _prompt(prompts)}],
            extra_body={"aig": {"fallbacks": False}},
        )
    # Everything the calls caused has been settled, logged and exported.
    wait_for_usage(base_url, api_key, calls=6)
    wait_until_settled(base_url, api_key)
    receiver.wait_for(
        lambda spans: (
            sum(s.service == "aig-billing" for s in spans) >= 4
            and sum(s.kind == SERVER and s.service == "aig-edge" for s in spans) >= 6
        )
    )

    # The media task's callback (the test above) is signed with it.
    webhook_secret = admin.get(f"/accounts/{created_key['account_id']}/webhook-secret")
    assert webhook_secret.status_code == 200, webhook_secret.text
    secrets_sent = {
        "the webhook secret": webhook_secret.json()["secret"],
        "an API key": api_key,
        "a wrong API key": wrong_key,
        "a refused API key": poor_key,
        "the admin token": traced_stack.admin_token,
        "the service token": traced_stack.service_token,
        "the key pepper": traced_stack.key_pepper,
        **{f"provider key {name}": value for name, value in EXTRA_PROVIDER_KEYS.items()},
        **{f"prompt {n}": text for n, text in enumerate(prompts)},
    }
    assert len(prompts) >= 8
    for span in receiver.spans:
        text = _span_text(span)
        for what, secret in secrets_sent.items():
            assert secret not in text, f"{what} in span {span.service} {span.name}"

    for service in SERVICES_LOGGING_JSON:
        assert _json_log(traced_stack, service), f"{service} logged nothing"
    logs = sorted((traced_stack.var_dir / "logs").glob("*.log"))
    assert {"edge.log", "router.log", "billing.log"} <= {log.name for log in logs}
    for log in logs:
        if log.name == "sandbox.log":
            continue  # the provider's side: it is sent the prompts and credentials
        text = log.read_text(errors="replace")
        # The API's complaint when a span's context was left in another task's context.
        assert "Failed to detach context" not in text, log.name
        for what, secret in secrets_sent.items():
            assert secret not in text, f"{what} in {log.name}"
