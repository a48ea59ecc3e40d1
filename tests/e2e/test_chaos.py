"""Chaos with reconciliation: steady mixed load while the broker is frozen, killed and
stopped, billing dies between its ledger write and its settlement, and the router is killed
with usage events only in its journal; then every 200 the clients saw must be one ledger
row and one settlement, the balance must move by exactly what was billed, nothing may stay
reserved and the key's cap must hold.

A stack of its own on PostgreSQL (production's control DB), so nothing here disturbs the
session stacks of the other e2e tests. Slow (`make test-slow`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import bpe_openai
import httpx
import orjson
import pytest
from openai.types import CompletionUsage

from aig_common.money import apply_markup, parse_usd, usd
from catalog.models import load_catalog
from devstack.kafka import LocalKafka
from devstack.stack import Stack

from .conftest import (
    admin_client,
    control_db_connection,
    create_key,
    list_price_nano_usd,
    start_stack,
    worst_case_nano_usd,
)
from .test_billing import _billing_events, _calls_of

pytestmark = [pytest.mark.slow, pytest.mark.broker_process, pytest.mark.timeout(840)]

MODEL = "gpt-4o-mini"
MARKUP_BASIS_POINTS = 4000  # the starter tier's
CREDITS_USD = "100.00"
CLIENTS = 4
BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me about the weather at sea."}],
    "max_tokens": 60,
    "aig": {"fallbacks": False},
}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
# Streams of 5 chunks 200 ms apart: a client that leaves after the first chunk has seen all
# the router streamed before it noticed (the documented rule bills exactly that).
SANDBOX_ENV = {"AIG_SANDBOX_CHUNK_INTERVAL_MS": "200", "AIG_SANDBOX_STREAM_CHUNKS": "5"}
# How many worst cases the key's daily cap leaves room for when the last phase begins:
# the broker is down then, so reservations pile up and the cap binds.
CAP_HEADROOM_CALLS = 40
CRASH_ON_BATCH = 2


@dataclass
class Call:
    kind: str  # unary | stream | abandon
    status: int | None = None
    request_id: str | None = None
    # ok | abandoned (a 200 the client saw) | refused (402) | failed | stream_error
    outcome: str = "failed"
    expected_billed: int = 0
    seen_tokens: int = 0  # an abandoned stream's output before the client left
    detail: str = ""


@dataclass
class Load:
    """Client tasks calling the edge on a thread of their own until stopped; `pause` parks
    them between calls, `in_flight` counts the calls under way."""

    edge_url: str
    key: str
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        asyncio.run(self._clients())

    async def _clients(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(
            base_url=f"{self.edge_url}/v1", headers=headers, timeout=60
        ) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(CLIENTS)))

    async def _client(self, http: httpx.AsyncClient, number: int) -> None:
        kinds = ("unary", "stream", "abandon", "unary")
        turn = number
        while not self.stop.is_set():
            if self.pause.is_set():
                await asyncio.sleep(0.05)
                continue
            call = Call(kinds[turn % len(kinds)])
            turn += 1
            with self.lock:
                self.in_flight += 1
            try:
                if call.kind == "unary":
                    await _unary(http, call)
                else:
                    await _stream(http, call, abandon=call.kind == "abandon")
            except httpx.HTTPError as exc:
                call.detail = repr(exc)
                if call.outcome not in ("ok", "abandoned"):
                    call.outcome = "stream_error" if call.status == 200 else "failed"
            finally:
                with self.lock:
                    self.in_flight -= 1
                    self.calls.append(call)
            if call.outcome not in ("ok", "abandoned"):
                await asyncio.sleep(0.25)  # during an outage, not a busy loop of errors

    def quiesce(self, timeout_s: float = 60) -> None:
        """Parks the clients and waits until no call is under way."""
        self.pause.set()
        deadline = time.monotonic() + timeout_s
        while self.in_flight:
            assert time.monotonic() < deadline, "calls still under way"
            time.sleep(0.02)


# gpt-4o-mini's tokenizer is public, so an abandoned stream's figures are real token counts
# (catalog.tokenizer), checked here with the encoding itself.
O200K = bpe_openai.get_encoding("o200k_base")


def _o200k_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """OpenAI's chat format: 3 tokens per message, its role and content, 3 priming the reply."""
    return 3 + sum(
        3 + len(O200K.encode(m["role"])) + len(O200K.encode(m["content"])) for m in messages
    )


def _billed(usage: dict[str, Any]) -> int:
    upstream = list_price_nano_usd(MODEL, CompletionUsage.model_validate(usage))
    return apply_markup(upstream, MARKUP_BASIS_POINTS)


def _abandoned_bill(call: Call, row: dict[str, Any]) -> int:
    """The documented rule for a stream the client left: the prompt (central estimate) and
    the output the router had streamed, at list price with markup; or, when the router had
    streamed the whole answer before it noticed, the call as completed."""
    prompt, produced = int(row["prompt_tokens"]), int(row["completion_tokens"])
    if (row["http_status"], row["outcome"]) != (200, "succeeded"):
        assert (row["http_status"], row["error_code"]) == (499, "client_closed"), row
        assert prompt == _o200k_prompt_tokens(STREAM_BODY["messages"]), row
    assert call.seen_tokens <= produced <= BODY["max_tokens"], (call, row)
    model = load_catalog().chat(MODEL)
    assert model is not None
    upstream = prompt * model.input_nano_usd_per_token + produced * model.output_nano_usd_per_token
    return apply_markup(upstream, MARKUP_BASIS_POINTS)


def _settle_outcome(call: Call, response: httpx.Response) -> bool:
    call.status = response.status_code
    call.request_id = response.headers.get("x-request-id")
    if response.status_code == 200:
        return True
    call.outcome = "refused" if response.status_code == 402 else "failed"
    return False


async def _unary(http: httpx.AsyncClient, call: Call) -> None:
    response = await http.post("/chat/completions", json=BODY)
    if _settle_outcome(call, response):
        call.expected_billed = _billed(response.json()["usage"])
        call.outcome = "ok"


async def _stream(http: httpx.AsyncClient, call: Call, *, abandon: bool) -> None:
    async with http.stream("POST", "/chat/completions", json=STREAM_BODY) as response:
        if not _settle_outcome(call, response):
            await response.aread()
            return
        seen, usage, finished, done = "", None, False, False
        call.outcome = "stream_error"
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
                break
            if not line.startswith("data: {"):
                continue
            chunk = orjson.loads(line.removeprefix("data: "))
            if "error" in chunk:
                call.detail = str(chunk["error"])
                return
            for choice in chunk.get("choices") or []:
                seen += choice["delta"].get("content") or ""
                finished = finished or bool(choice.get("finish_reason"))
            usage = chunk.get("usage") or usage
            if abandon and seen:
                # One content chunk, then the client hangs up. What the router streamed
                # before it noticed is at least this; the ledger row says how much.
                call.seen_tokens = len(O200K.encode(seen))
                call.outcome = "abandoned"
                return
        if done and finished and usage is not None:
            call.expected_billed = _billed(usage)
            call.outcome = "ok"


@pytest.fixture(scope="module")
def chaos_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = start_stack(request, tmp_path_factory, "postgres", lambda _d, _p: SANDBOX_ENV)
    yield running
    running.stop()


@contextlib.contextmanager
def _running(load: Load) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=load.run, name="chaos-load")
    thread.start()
    try:
        yield thread
    finally:
        load.stop.set()
        thread.join(120)


def _broker(stack: Stack) -> LocalKafka:
    assert isinstance(stack.kafka, LocalKafka) and stack.kafka.process is not None
    return stack.kafka


def _phase(name: str, started: float, load: Load) -> None:
    outcomes = Counter(call.outcome for call in list(load.calls))
    print(f"[{time.monotonic() - started:6.1f} s] {name}: {dict(outcomes)}", flush=True)


def _freeze_broker(stack: Stack, seconds: float) -> None:
    broker = _broker(stack).process
    assert broker is not None
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(broker.pid, signal.SIGCONT)


def _kill_and_restart_broker(stack: Stack) -> None:
    kafka = _broker(stack)
    assert kafka.process is not None
    kafka.process.kill()
    kafka.process.wait()
    kafka.start()
    kafka.wait_ready()


def _crash_billing_between_ledger_and_settlement(stack: Stack) -> None:
    billing = stack.service("billing")
    billing.stop()
    hook = {"AIG_BILLING_CRASH_AFTER_LEDGER_BATCH": str(CRASH_ON_BATCH)}
    crashing = replace(billing, env={**billing.env, **hook}, process=None)
    try:
        crashing.start()
        assert crashing.process is not None
        # It settles one batch, writes the next one's ledger rows and dies before settling.
        assert crashing.process.wait(120) == 17
    finally:
        crashing.stop()
        billing.start()
        billing.wait_ready()


def _set_cap_near(stack: Stack, key: dict[str, Any]) -> int:
    """A daily cap on the key with room for CAP_HEADROOM_CALLS more worst cases."""
    me = httpx.get(
        f"{stack.edge_url}/v1/me", headers={"authorization": f"Bearer {key['key']}"}, timeout=10
    ).json()
    daily = me["key"]["caps"]["daily"]
    used = parse_usd(daily["spent_usd"]) + parse_usd(daily["reserved_usd"])
    cap = used + CAP_HEADROOM_CALLS * worst_case_nano_usd(BODY, MARKUP_BASIS_POINTS)
    with admin_client(stack) as admin:
        admin.patch(f"/keys/{key['id']}", json={"daily_cap_usd": usd(cap)}).raise_for_status()
    return cap


def _router_killed_with_events_in_its_journal(stack: Stack, load: Load) -> None:
    kafka = _broker(stack)
    kafka.stop()
    try:
        time.sleep(5)  # calls go on; their usage events wait in the router's journal
        # Between calls: a call the router dies in the middle of has no usage event, and
        # its reservation stays until expiry (docs/architecture.md, Money); that is not
        # what this phase is about.
        load.quiesce()
        router = stack.service("router")
        assert router.process is not None
        router.process.kill()
        router.process.wait()
        load.pause.clear()  # calls meet a missing router meanwhile: 503, free
        time.sleep(2)
        router.start()
        router.wait_ready()
        time.sleep(3)
    finally:
        kafka.start()
        kafka.wait_ready()


@dataclass
class ControlDb:
    balance: int
    settlements: dict[str, int]  # event id -> billed
    reservations: int
    key_spend: int


def _control_db(stack: Stack, key: dict[str, Any]) -> ControlDb:
    async def read() -> ControlDb:
        connection = await control_db_connection(stack)
        try:
            balance = await connection.fetchval(
                "SELECT balance_nano_usd FROM accounts WHERE id = $1", key["account_id"]
            )
            settled = await connection.fetch(
                "SELECT event_id, billed_nano_usd FROM settlements WHERE account_id = $1",
                key["account_id"],
            )
            reservations = await connection.fetchval(
                "SELECT count(*) FROM reservations WHERE account_id = $1", key["account_id"]
            )
            spend = await connection.fetchval(
                "SELECT coalesce(max(spent_nano_usd), 0) FROM spend_counters"
                " WHERE scope = 'key' AND scope_id = $1 AND length(period) = 10",
                key["id"],
            )
        finally:
            await connection.close()
        return ControlDb(
            balance=int(balance),
            settlements={row["event_id"]: int(row["billed_nano_usd"]) for row in settled},
            reservations=int(reservations),
            key_spend=int(spend),
        )

    return asyncio.run(read())


def _drained(stack: Stack, key: dict[str, Any], served: set[str]) -> tuple[list[Any], ControlDb]:
    """Waits until nothing is reserved, every 200 has its ledger row and every row its
    settlement; returns the ledger's rows and the control DB as they then are."""
    deadline = time.monotonic() + 240
    while True:
        control = _control_db(stack, key)
        rows = _calls_of(stack, key["account_id"], limit=10_000)
        in_ledger = {row["request_id"] for row in rows}
        settled = {row["event_id"] for row in rows} <= set(control.settlements)
        if control.reservations == 0 and served <= in_ledger and settled:
            return rows, control
        if time.monotonic() > deadline:
            missing = len(served - in_ledger)
            raise AssertionError(
                f"not drained: {control.reservations} reservations held, {missing} 200s"
                f" without a ledger row, {len(rows)} rows, {len(control.settlements)} settled"
            )
        time.sleep(1)


def test_chaos_then_every_200_is_billed_exactly_once(chaos_stack: Stack) -> None:
    stack = chaos_stack
    started = time.monotonic()
    with admin_client(stack) as admin:
        key = create_key(admin, "chaos", credits_usd=CREDITS_USD)
    load = Load(stack.edge_url, key["key"])
    with _running(load):
        time.sleep(4)
        _phase("steady load", started, load)
        _freeze_broker(stack, 6)
        time.sleep(2)
        _phase("broker frozen 6 s (SIGSTOP), thawed", started, load)
        _kill_and_restart_broker(stack)
        time.sleep(2)
        _phase("broker killed (-9), restarted", started, load)
        _crash_billing_between_ledger_and_settlement(stack)
        time.sleep(2)
        _phase(f"billing died after the ledger write of batch {CRASH_ON_BATCH}", started, load)
        cap = _set_cap_near(stack, key)
        _router_killed_with_events_in_its_journal(stack, load)
        time.sleep(3)
        _phase("broker stopped, router killed (-9), both restarted", started, load)
    assert not load.pause.is_set()
    loaded = time.monotonic()
    calls = list(load.calls)
    served = {c.request_id: c for c in calls if c.outcome in ("ok", "abandoned")}
    assert all(served), "a 200 without an x-request-id"
    rows, control = _drained(stack, key, {rid for rid in served if rid})
    drained_s = time.monotonic() - loaded

    outcomes = Counter((call.kind, call.outcome) for call in calls)
    by_request = Counter(row["request_id"] for row in rows)
    billed = sum(parse_usd(row["billed_cost_usd"]) for row in rows)
    delta = parse_usd(CREDITS_USD) - control.balance
    duplicates = _billing_events(stack, "duplicate")
    print("\n--- chaos reconciliation ---")
    for (kind, outcome), count in sorted(outcomes.items()):
        print(f"calls {kind:8} {outcome:13} {count}")
    print(f"calls total {len(calls)}; 200s {len(served)}; ledger rows {len(rows)}")
    print(f"settlements {len(control.settlements)}; reservations left {control.reservations}")
    print(f"sum billed (ledger) {billed} nano-USD = ${usd(billed)}")
    print(f"sum settled {sum(control.settlements.values())}")
    print(f"balance delta {delta}; key spend today {control.key_spend} <= cap {cap}")
    print(f"duplicates seen by billing since its restart: {duplicates:.0f}")
    print(f"load {loaded - started:.1f} s; time to drain {drained_s:.1f} s")

    # No request id billed twice.
    assert [rid for rid, n in by_request.items() if n > 1] == []
    # Every 200 exactly one ledger row, billed as its kind's rule says; the rest free.
    for row in rows:
        call = served.get(row["request_id"])
        if call is None:
            assert parse_usd(row["billed_cost_usd"]) == 0, row
            continue
        if call.outcome == "abandoned":
            call.expected_billed = _abandoned_bill(call, row)
        else:
            assert (row["http_status"], row["outcome"]) == (200, "succeeded"), row
        assert parse_usd(row["billed_cost_usd"]) == call.expected_billed, (call, row)
    assert set(served) <= set(by_request)
    expected = sum(call.expected_billed for call in served.values())
    print(f"sum expected (client side, abandoned by the rule) {expected}")
    # One settlement per ledger row, for the same amount, and nothing else settled.
    assert {row["event_id"]: parse_usd(row["billed_cost_usd"]) for row in rows} == (
        control.settlements
    )
    assert billed == expected == delta == control.key_spend > 0
    assert control.balance == parse_usd(CREDITS_USD) - billed
    assert control.reservations == 0
    assert control.key_spend <= cap
    assert outcomes[("abandon", "abandoned")] > 0 and outcomes[("stream", "ok")] > 0
