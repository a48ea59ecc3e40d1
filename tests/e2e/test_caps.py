# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""Spend caps: 402 before any upstream call, exact under concurrency, on SQLite and
PostgreSQL, with one edge process or two behind the same database."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bpe_openai
import httpx
import openai
import pytest

from aig_common.money import apply_markup, parse_usd, usd
from catalog.models import load_catalog
from devstack.stack import Stack

from .conftest import (
    Sandbox,
    control_db_connection,
    create_key,
    sandbox_settings,
    start_stack,
    wait_until_settled,
    worst_case_nano_usd,
)

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "How much does this cost?"}],
    "max_tokens": 100,
}
# The burst asks for 1,000 tokens and the sandbox is told to use all of them, so a call's
# real cost is within 1 % of its reservation: one call admitted past the cap shows in the
# count and in the bill. (Settlements during the burst free only the prompt's
# over-estimate, ~1 % per call: 20 of them cannot make room for a 21st.)
BURST_BODY: dict[str, Any] = {**BODY, "max_tokens": 1000, "aig": {"fallbacks": False}}
CONCURRENT_CALLS = 200
CALLS_THAT_FIT = 20
RESERVATION_TTL_S = 12


@pytest.fixture(scope="module")
def pg_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """PostgreSQL control DB (its own database) with two edge processes, and short-lived
    reservations."""
    running = start_stack(
        request,
        tmp_path_factory,
        "postgres",
        lambda _var_dir, _ports: {"AIG_RESERVATION_TTL_S": str(RESERVATION_TTL_S)},
        extra_edges=1,
    )
    yield running
    running.stop()


def _admin(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )


async def _burst(edge_urls: list[str], keys: list[str], calls: int) -> list[int]:
    """Fires `calls` chat calls at once, spread over the edges and keys; returns statuses."""
    limits = httpx.Limits(max_connections=calls)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(index: int) -> int:
            response = await client.post(
                f"{edge_urls[index % len(edge_urls)]}/v1/chat/completions",
                json=BURST_BODY,
                headers={"authorization": f"Bearer {keys[index % len(keys)]}"},
            )
            if response.status_code == 402:
                assert response.json()["error"]["code"].endswith("_cap")
            elif response.status_code == 200:
                # The premise of the exact count: the answer used the whole allowance.
                usage = response.json()["usage"]
                assert usage["completion_tokens"] == BURST_BODY["max_tokens"]
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(calls))))


def _succeeded_and_billed(edge_url: str, api_key: str) -> tuple[int, int]:
    usage = httpx.get(
        f"{edge_url}/v1/usage",
        params={"group_by": "model"},
        headers={"authorization": f"Bearer {api_key}"},
        timeout=30,
    ).json()
    succeeded = sum(int(row["succeeded"]) for row in usage["data"])
    billed = sum(parse_usd(row["billed_cost_usd"]) for row in usage["data"])
    return succeeded, billed


def _prove_cap_holds(stack: Stack, edge_urls: list[str], scope: str) -> None:
    one_call = worst_case_nano_usd(BURST_BODY)
    cap = usd(one_call * CALLS_THAT_FIT)
    with _admin(stack) as admin:
        if scope == "key":
            key = create_key(admin, "burst")
            admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": cap}).raise_for_status()
            keys = [key["key"]]
        else:
            account = admin.post("/accounts", json={"name": "team", "credits_usd": "1000.00"})
            account_id = account.json()["id"]
            workspace = admin.post(
                "/workspaces", json={"account_id": account_id, "name": "t", "daily_cap_usd": cap}
            ).json()
            keys = [
                admin.post(
                    "/keys",
                    json={
                        "account_id": account_id,
                        "name": f"k{i}",
                        "workspace_id": workspace["id"],
                    },
                ).json()["key"]
                for i in range(5)
            ]
    # Answers longer than the allowance stop at max_tokens.
    with sandbox_settings(stack, answer_tokens=2 * BURST_BODY["max_tokens"]):
        statuses = asyncio.run(_burst(edge_urls, keys, CONCURRENT_CALLS))
    assert set(statuses) <= {200, 402}, statuses
    ok = statuses.count(200)
    # floor(cap / worst case): one fewer means admission lost a reservation's worth of
    # room, one more means two admissions did not see each other.
    assert ok == parse_usd(cap) // one_call == CALLS_THAT_FIT

    me = wait_until_settled(f"{edge_urls[0]}/v1", keys[0])
    caps = me["workspace"]["caps"] if scope == "workspace" else me["key"]["caps"]
    spent = parse_usd(caps["daily"]["spent_usd"])
    assert spent <= parse_usd(cap)
    succeeded, billed = _succeeded_and_billed(edge_urls[0], keys[0])
    assert succeeded == ok  # every call that got 200 is billed, and nothing else
    assert billed == spent


def test_key_cap_under_concurrency(stack: Stack) -> None:
    """One edge, on each control DB (the session stack runs on SQLite and PostgreSQL)."""
    _prove_cap_holds(stack, [stack.edge_url], "key")


def test_key_cap_with_two_edges_on_postgres(pg_stack: Stack) -> None:
    assert len(pg_stack.edge_urls) == 2
    _prove_cap_holds(pg_stack, pg_stack.edge_urls, "key")


def test_workspace_cap_over_five_keys_with_two_edges(pg_stack: Stack) -> None:
    _prove_cap_holds(pg_stack, pg_stack.edge_urls, "workspace")


# PostgreSQL runs this with two edges above; the session stack adds SQLite's case.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_workspace_cap_over_five_keys_on_sqlite(stack: Stack) -> None:
    _prove_cap_holds(stack, [stack.edge_url], "workspace")


@pytest.mark.parametrize(
    ("where", "field", "code"),
    [
        ("key", "daily_cap_usd", "key_daily_cap"),
        ("key", "monthly_cap_usd", "key_monthly_cap"),
        ("account", "daily_cap_usd", "account_daily_cap"),
        ("account", "monthly_cap_usd", "account_monthly_cap"),
        ("workspace", "daily_cap_usd", "workspace_daily_cap"),
        ("workspace", "monthly_cap_usd", "workspace_monthly_cap"),
        ("balance", None, "insufficient_credits"),
    ],
)
def test_each_limit_rejects_with_its_code_before_upstream(
    admin: httpx.Client, base_url: str, sandbox: Sandbox, where: str, field: str | None, code: str
) -> None:
    credits = "0.000001" if where == "balance" else "100.00"
    account = admin.post("/accounts", json={"name": where, "credits_usd": credits}).json()
    workspace = admin.post("/workspaces", json={"account_id": account["id"], "name": "w"}).json()
    key = admin.post(
        "/keys", json={"account_id": account["id"], "name": "k", "workspace_id": workspace["id"]}
    ).json()
    target = {"key": f"/keys/{key['id']}", "account": f"/accounts/{account['id']}"}.get(
        where, f"/workspaces/{workspace['id']}"
    )
    if field is not None:
        assert admin.patch(target, json={field: "0.00001"}).is_success
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**BODY)
    assert caught.value.status_code == 402
    assert caught.value.code == code
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "insufficient_quota"
    metadata = error["metadata"]
    assert metadata["limit_usd"] == ("0.000001" if where == "balance" else "0.00001")
    if where != "balance":
        assert metadata["resets_at"].endswith("Z")
    for provider in ("openai", "openrouter", "anthropic", "google"):
        assert sandbox.requests(provider) == []


def test_cap_changes_apply_to_the_very_next_call(admin: httpx.Client, base_url: str) -> None:
    key = create_key(admin, "patched")
    client = openai.OpenAI(base_url=base_url, api_key=key["key"], max_retries=0)
    assert client.chat.completions.create(**BODY).choices
    assert admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": "0"}).is_success
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**BODY)
    assert caught.value.code == "key_daily_cap"
    assert admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": None}).is_success
    assert client.chat.completions.create(**BODY).choices


def _held_reservations(stack: Stack, key_id: str) -> list[tuple[datetime, datetime]]:
    """When each reservation row of a key was made and when it expires, in UTC; expired rows
    too: only a release or a settlement deletes one."""

    async def read() -> list[tuple[datetime, datetime]]:
        connection = await control_db_connection(stack)
        try:
            query = "SELECT created_at, expires_at FROM reservations WHERE key_id = $1"
            rows = await connection.fetch(query, key_id)
        finally:
            await connection.close()
        # timestamptz: zone-aware
        return [(made.astimezone(UTC), expires.astimezone(UTC)) for made, expires in rows]

    return asyncio.run(read())


def _hang_a_call_and_kill(
    stack: Stack,
    names: tuple[str, ...],
    while_dead: Callable[[str, dict[str, str], str], None] | None = None,
) -> tuple[str, dict[str, str], str]:
    """Sends a call that hangs upstream under a cap with room for just it, kills `names`
    while it is in flight, runs `while_dead`, restarts them. Returns the URL and headers to
    call again with, and the key's id (what `while_dead` is given too)."""
    body = {**BODY, "aig": {"fallbacks": False}}
    with _admin(stack) as admin:
        key = create_key(admin, "orphan-" + "-".join(names))
        cap = usd(worst_case_nano_usd({**body, "model": "gpt-4o-mini"}) * 3 // 2)
        admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": cap}).raise_for_status()
    sandbox = Sandbox(stack.sandbox_url)
    sandbox.reset()  # an empty request log: the hanging call is the first entry
    sandbox.fault("openai", 200, delay_ms=30_000)  # the call hangs upstream
    url = f"{stack.edge_url}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key['key']}"}
    services = [stack.service(name) for name in names]

    def kill() -> None:
        # Only once the provider has the call is it in flight: reserved at the edge, held
        # by the router.
        deadline = time.monotonic() + 25
        while not sandbox.requests("openai") and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight.append(bool(sandbox.requests("openai")))
        # Frozen first, all of them, then killed: none lives to react to another's death
        # (a router that saw its edge go would meter the call, an edge that saw its router
        # go would release the reservation).
        for service in services:
            assert service.process is not None
            os.kill(service.process.pid, signal.SIGSTOP)
        for service in services:
            assert service.process is not None
            service.process.kill()

    in_flight: list[bool] = []
    killer = threading.Thread(target=kill)
    killer.start()
    try:
        with pytest.raises(httpx.HTTPError), httpx.Client(timeout=30) as client:
            client.post(url, json=body, headers=headers)
        killer.join()
        assert in_flight == [True], "the call never reached the provider"
        if while_dead is not None:
            while_dead(url, headers, key["id"])
    finally:
        killer.join()
        # Whatever happened, the module's stack gets its services back.
        for service in services:
            assert service.process is not None
            service.process.wait()
            service.start()
        for service in services:
            service.wait_ready()
        sandbox.reset()
    return url, headers, key["id"]


def test_a_call_whose_edge_dies_is_released_at_settlement(pg_stack: Stack) -> None:
    """The edge dies mid-call: the router's call is cancelled (which closes the upstream
    request) and metered as abandoned, billed for the prompt the provider was sent, and
    billing's settlement deletes the reservation (expiry would leave the row in place)."""
    url, headers, key_id = _hang_a_call_and_kill(pg_stack, ("edge",))
    deadline = time.monotonic() + 120
    while _held_reservations(pg_stack, key_id):
        assert time.monotonic() < deadline, "the cancelled call was never settled"
        time.sleep(0.25)
    usage = httpx.get(
        url.replace("/chat/completions", "/usage"),
        params={"group_by": "model", "start": "2000-01-01T00:00:00Z"},
        headers=headers,
        timeout=30,
    ).json()["data"]
    # Metered as the client having gone (499). gRPC's cancellation carries no reason, so the
    # router cannot tell an edge's death from a client's hang-up: the prompt upstream is
    # billed either way (docs/architecture.md, abandoned calls), and a billed call counts
    # among the succeeded, not the failed.
    o200k = bpe_openai.get_encoding("o200k_base")
    (message,) = BODY["messages"]
    prompt = 3 + len(o200k.encode(message["role"])) + len(o200k.encode(message["content"])) + 3
    model = load_catalog().chat("gpt-4o-mini")
    assert model is not None
    billed = apply_markup(prompt * model.input_nano_usd_per_token, 4000)
    seen = [(int(r["calls"]), int(r["failed"]), parse_usd(r["billed_cost_usd"])) for r in usage]
    assert seen == [(1, 0, billed)] and billed > 0
    body = {**BODY, "aig": {"fallbacks": False}}
    assert httpx.post(url, json=body, headers=headers, timeout=30).status_code == 200


def test_orphaned_reservation_expires(pg_stack: Stack) -> None:
    """Edge and router both die mid-call: nobody settles or releases the reservation; it
    holds the cap until it expires."""
    body = {**BODY, "aig": {"fallbacks": False}}

    def held(url: str, headers: dict[str, str], key_id: str) -> None:
        # The other edge admits without a router: the orphan still holds the cap.
        other_edge = pg_stack.edge_urls[1]
        refused = httpx.post(
            f"{other_edge}/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        assert refused.status_code == 402, refused.text
        assert len(_held_reservations(pg_stack, key_id)) == 1  # neither released nor settled

    url, headers, key_id = _hang_a_call_and_kill(pg_stack, ("edge", "router"), held)
    reservations = _held_reservations(pg_stack, key_id)
    assert len(reservations) == 1
    ((created_at, expires_at),) = reservations
    assert expires_at - created_at == timedelta(seconds=RESERVATION_TTL_S)
    # Wait for the row's own expiry, not a clock started before the call: the key's set-up
    # and the call's admission take a variable part of a second on a busy machine.
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds() + 0.5))
    accepted = httpx.post(url, json=body, headers=headers, timeout=30)
    assert accepted.status_code == 200, accepted.text
