"""SIGTERM to a router in the middle of a stream (what a rolling restart does): the router
stops being ready, the stream runs to its end, its usage event is billed exactly once, and
the router exits 0."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import openai
import pytest

from aig_common.money import NANO_PER_USD, parse_usd
from devstack.stack import Stack

from .conftest import create_key, sandbox_settings, wait_for_usage, wait_until_settled

STREAM_CHUNKS = 12
CHUNK_INTERVAL_MS = 250  # a 3 s stream, well inside the router's default 30 s drain


@pytest.fixture
def slow_streams(stack: Stack) -> Any:
    with sandbox_settings(stack, chunk_interval_ms=CHUNK_INTERVAL_MS, stream_chunks=STREAM_CHUNKS):
        yield


def _router_ready(stack: Stack) -> int:
    return httpx.get(f"http://127.0.0.1:{stack.ports.router_ops}/readyz", timeout=5).status_code


def _wait_until_calls_pass(client: openai.OpenAI, timeout_s: float = 60) -> None:
    """The edge's channel reconnects to the restarted router with backoff."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "back?"}]
            )
            return
        except openai.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_router_drains_a_stream_after_sigterm(
    stack: Stack, admin: httpx.Client, base_url: str, slow_streams: None
) -> None:
    key = create_key(admin, "drain", credits_usd="20.00")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    router = stack.service("router")
    assert router.process is not None and _router_ready(stack) == 200

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell me a long story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(stream)
    received = [next(chunks)]
    router.process.send_signal(signal.SIGTERM)
    # Draining: no longer ready (a Service stops sending it calls), the stream goes on.
    readiness_after_sigterm = _router_ready(stack)
    received += list(chunks)
    try:
        assert readiness_after_sigterm == 503
        finish = [c.choices[0].finish_reason for c in received if c.choices]
        assert finish[-1] == "stop"
        text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
        assert text
        usage = received[-1].usage
        assert usage is not None and usage.completion_tokens > 0
        assert router.process.wait(timeout=30) == 0
    finally:
        if not router.running():
            router.restart()
            router.wait_ready()
        _wait_until_calls_pass(client)

    # The drained stream was billed once, like any other: one ledger row among the two calls
    # (the stream and the probe that found the restarted router), balance = credits - billed.
    rows = wait_for_usage(base_url, key["key"], 2)
    assert sum(int(r["calls"]) for r in rows) == 2
    assert sum(int(r["succeeded"]) for r in rows) == 2
    me = wait_until_settled(base_url, key["key"])
    billed = sum(parse_usd(r["billed_cost_usd"]) for r in rows)
    assert billed > 0
    assert parse_usd(me["account"]["balance_usd"]) == 20 * NANO_PER_USD - billed
