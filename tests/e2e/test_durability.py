"""Usage is never only in memory: a router killed during a broker outage loses no charge."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import httpx
import openai
import pytest

from devstack.kafka import LocalKafka
from devstack.stack import Stack

from .conftest import create_key, usage_rows, wait_until_settled

CREDITS_USD = "100.00"


def _call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=40,
        extra_body={"aig": {"fallbacks": False}},
    )
    assert reply.choices


def _ledger_calls(base_url: str, key: str) -> int:
    return sum(int(row["calls"]) for row in usage_rows(base_url, key))


@pytest.mark.broker_process
def test_a_router_killed_during_a_broker_outage_loses_no_usage(stack: Stack) -> None:
    started = time.monotonic()
    base_url = f"{stack.edge_url}/v1"
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ) as admin:
        key = create_key(admin, "durability", credits_usd=CREDITS_USD)["key"]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    _call(client)  # the broker is warm and the topic exists
    wait_until_settled(base_url, key)
    assert isinstance(stack.kafka, LocalKafka) and stack.kafka.process is not None
    broker = stack.kafka.process.pid
    os.kill(broker, signal.SIGSTOP)
    try:
        for _ in range(10):
            _call(client)
        print(f"calls answered during the outage at {time.monotonic() - started:.1f} s")
        router = stack.service("router")
        assert router.process is not None
        router.process.kill()  # kill -9 while every event is still unsent
        router.process.wait()
        router.start()
        router.wait_ready()
    finally:
        os.kill(broker, signal.SIGCONT)
    print(f"router restarted at {time.monotonic() - started:.1f} s")
    deadline = time.monotonic() + 120
    while _ledger_calls(base_url, key) < 11 and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"ledger complete at {time.monotonic() - started:.1f} s")
    me = wait_until_settled(base_url, key)
    assert _ledger_calls(base_url, key) == 11  # every 200, each exactly once
    billed = sum(Decimal(row["billed_cost_usd"]) for row in usage_rows(base_url, key))
    assert billed > 0
    assert Decimal(me["account"]["balance_usd"]) == Decimal(CREDITS_USD) - billed
