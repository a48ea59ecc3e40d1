# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""The whole gateway with the router inside the edge's process (AIG_EDGE_IN_PROCESS_ROUTER=1,
edge/in_process_router.py), on a stack of its own that runs no router service.

The router's code is the same either way; what differs is the hop, the router's start and
its drain inside the edge's lifespan. So the suite's own tests of what crosses the hop run
here again, unchanged (imported below, they use this module's stack): chat and streams from
the OpenAI SDK, embeddings and the model list (gRPC to the in-process server), failover and
its metrics (the router's metrics are on the edge's /metrics here), exact debits from the
usage events the in-process router publishes, and a client that leaves (a non-streamed
call's task cancelled in the edge, a stream cancelled through the in-process stream; both
metered as abandoned). Then the edge's SIGTERM: a stream in
flight runs to its end and is billed once, and the edge exits 0 having flushed the router's
usage events."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import openai
import pytest

from aig_common.money import NANO_PER_USD, parse_usd
from devstack.stack import Stack

from .conftest import (
    _session_stack_env,
    admin_client,
    create_key,
    edge_client,
    start_stack,
    wait_for_usage,
    wait_until_settled,
)
from .test_billing import (  # noqa: F401  (run again on this stack)
    test_a_call_the_client_leaves_is_cancelled_upstream_and_pays_for_its_prompt,
    test_a_stream_the_client_leaves_pays_for_its_prompt_and_what_it_produced,
    test_calls_become_rows_and_exact_debits,
)
from .test_failover import (  # noqa: F401
    healed,
    test_failed_attempts_add_nothing_to_spend,
    test_openai_outage_fails_over_with_the_same_request,
    test_overloaded_stream_fails_over_before_the_first_chunk,
)
from .test_graceful_shutdown import STREAM_CHUNKS, slow_streams  # noqa: F401
from .test_metrics import test_a_provider_fault_moves_failovers_and_attempt_latency  # noqa: F401
from .test_openai_sdk import (  # noqa: F401
    test_async_client_plain_and_stream,
    test_embeddings_base64_default_and_float,
    test_models_list,
    test_plain_completion,
    test_streamed_with_include_usage,
)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = start_stack(
        request, tmp_path_factory, "sqlite", _session_stack_env, in_process_router=True
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with admin_client(stack) as client:
        yield client


@pytest.fixture(scope="module")
def api_key(admin: httpx.Client) -> str:
    return str(create_key(admin)["key"])


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    return f"{stack.edge_url}/v1"


@pytest.fixture(scope="module")
def client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


@pytest.fixture(scope="module")
def async_client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)


@pytest.fixture(scope="module")
def edge(stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    with edge_client(stack, api_key) as client:
        yield client


def test_no_router_runs_apart(stack: Stack, client: openai.OpenAI) -> None:
    """The calls above were served with no router service: the stack started none, and
    nothing listens on the router's ports."""
    assert [service.name for service in stack.services if service.module == "router"] == []
    for port in (stack.ports.router, stack.ports.router_calls):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "who serves?"}]
    )
    # Served by a provider of the model's route chain (which one depends on the breakers
    # the tests above left), through the router inside the edge.
    assert raw.headers["x-aig-provider"] in ("openai", "openrouter")
    assert raw.parse().choices[0].message.content


def test_an_edge_drains_its_router_after_sigterm(
    stack: Stack,
    admin: httpx.Client,
    base_url: str,
    slow_streams: None,  # noqa: F811
) -> None:
    """Last in this module: it stops the edge. A stream in flight at SIGTERM runs to its
    end, the edge exits 0, and the stream's usage event, published by the router inside it,
    was flushed before it exited: billed exactly once."""
    key = create_key(admin, "edge-drain", credits_usd="20.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    edge = stack.service("edge")
    assert edge.process is not None
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a long story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(stream)
    received = [next(chunks)]
    edge.process.send_signal(signal.SIGTERM)
    received += list(chunks)
    try:
        text = [c.choices[0].delta.content or "" for c in received if c.choices]
        assert len([piece for piece in text if piece]) == STREAM_CHUNKS
        assert [c.choices[0].finish_reason for c in received if c.choices][-1] == "stop"
        usage = received[-1].usage
        assert usage is not None and usage.completion_tokens > 0
        assert edge.process.wait(timeout=60) == 0
    finally:
        if not edge.running():
            edge.restart()
            edge.wait_ready()
    rows = wait_for_usage(base_url, key["key"], 1)
    assert [(int(r["calls"]), int(r["succeeded"])) for r in rows] == [(1, 1)]
    billed = parse_usd(rows[0]["billed_cost_usd"])
    assert billed > 0
    me = wait_until_settled(base_url, key["key"])
    assert parse_usd(me["account"]["balance_usd"]) == 20 * NANO_PER_USD - billed
