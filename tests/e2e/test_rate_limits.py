"""Per-key request-rate limits (rpm_limit) on the whole stack, through the official SDKs:
exactly the limit is admitted, the rest is a 429 with OpenAI's headers in every dialect,
nothing refused reaches a provider or the bill, and removing the limit lifts it.

The window is a sliding approximation over UTC minutes; every call here is made within a
few seconds, and a limit once reached stays reached for at least 20 s even across a minute
boundary (3 x 40/60 > 2), so the counts below do not depend on when the test runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aig_common.money import parse_usd
from devstack.stack import Stack

from .conftest import FAMILY_MODELS, Sandbox, wait_for_usage, wait_until_settled

LIMIT = 3
BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Am I going too fast?"}],
    "max_tokens": 20,
    "extra_body": {"aig": {"fallbacks": False}},
}
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


def _limited_key(admin: httpx.Client, name: str) -> dict[str, Any]:
    account = admin.post("/accounts", json={"name": name, "credits_usd": "10.00"})
    assert account.status_code == 201, account.text
    key = admin.post(
        "/keys", json={"account_id": account.json()["id"], "name": name, "rpm_limit": LIMIT}
    )
    assert key.status_code == 201, key.text
    assert key.json()["rpm_limit"] == LIMIT
    return dict(key.json())


def _assert_refused(headers: Mapping[str, str]) -> None:
    assert headers["x-ratelimit-limit-requests"] == str(LIMIT)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(headers["retry-after"]) >= 1


def test_a_limited_key_gets_exactly_its_limit_then_429s_until_the_limit_is_removed(
    admin: httpx.Client, base_url: str, sandbox: Sandbox
) -> None:
    key = _limited_key(admin, "rpm")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    statuses, remaining = [], []
    for _ in range(LIMIT + 3):
        try:
            raw = client.chat.completions.with_raw_response.create(**BODY)
        except openai.RateLimitError as refused:
            statuses.append(429)
            assert refused.code == "rate_limit_exceeded"
            assert refused.type == "requests"
            assert refused.param is None
            assert f"{LIMIT} requests per minute" in refused.message
            _assert_refused(refused.response.headers)
            continue
        statuses.append(200)
        assert raw.headers["x-ratelimit-limit-requests"] == str(LIMIT)
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert statuses == [200] * LIMIT + [429] * 3
    assert remaining == [2, 1, 0]
    # Every other endpoint that admits is held by the same count.
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="too fast")
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="gpt-4o-mini", input="too fast", max_output_tokens=20)
    # Nothing refused reached a provider.
    assert len(sandbox.requests("openai")) == LIMIT

    me = httpx.get(
        f"{base_url}/me", headers={"authorization": f"Bearer {key['key']}"}, timeout=10
    ).json()
    assert me["key"]["rpm_limit"] == LIMIT
    rows = wait_for_usage(base_url, key["key"], LIMIT)
    assert sum(int(row["calls"]) for row in rows) == LIMIT
    billed = sum(parse_usd(row["billed_cost_usd"]) for row in rows)
    settled = wait_until_settled(base_url, key["key"])
    assert billed > 0
    assert parse_usd(settled["account"]["balance_usd"]) == parse_usd("10.00") - billed

    lifted = admin.patch(f"/keys/{key['id']}", json={"rpm_limit": None})
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["rpm_limit"] is None
    for _ in range(LIMIT + 2):
        raw = client.chat.completions.with_raw_response.create(**BODY)
        assert "x-ratelimit-limit-requests" not in raw.headers


def test_429_in_the_anthropic_and_kie_dialects(
    stack: Stack, admin: httpx.Client, sandbox: Sandbox
) -> None:
    key = _limited_key(admin, "rpm-dialects")
    claude = anthropic.Anthropic(base_url=stack.edge_url, api_key=key["key"], max_retries=0)
    ask: dict[str, Any] = {
        "model": FAMILY_MODELS["anthropic"],
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "Slow down?"}],
    }
    for _ in range(LIMIT):
        raw = claude.messages.with_raw_response.create(**ask)
        assert raw.headers["x-ratelimit-limit-requests"] == str(LIMIT)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(**ask)
    body: Any = refused.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert f"{LIMIT} requests per minute" in body["error"]["message"]
    _assert_refused(refused.value.response.headers)

    task = {"model": "flux-kontext-pro", "input": {"prompt": "a fox", "num_images": 1}}
    jobs = httpx.post(
        f"{stack.edge_url}/v1/jobs/createTask",
        json=task,
        headers={"authorization": f"Bearer {key['key']}"},
        timeout=30,
    )
    assert jobs.status_code == 429, jobs.text
    assert jobs.json()["code"] == 429 and jobs.json()["data"] is None
    assert jobs.json()["msg"] == jobs.json()["error"]["message"]
    assert jobs.json()["error"]["code"] == "rate_limit_exceeded"
    _assert_refused(jobs.headers)
    assert len(sandbox.requests("anthropic")) == LIMIT


@pytest.mark.parametrize("value", [0, -1, 1_000_001, "5", 2.5, True])
def test_rpm_limit_must_be_a_sane_whole_number(admin: httpx.Client, value: Any) -> None:
    key = _limited_key(admin, "rpm-bad")
    patched = admin.patch(f"/keys/{key['id']}", json={"rpm_limit": value})
    assert patched.status_code == 400, patched.text
    assert patched.json()["error"]["param"] == "rpm_limit"
    assert patched.json()["error"]["code"] == "invalid_value"
    created = admin.post(
        "/keys", json={"account_id": key["account_id"], "name": "x", "rpm_limit": value}
    )
    assert created.status_code == 400, created.text
    assert created.json()["error"]["param"] == "rpm_limit"
