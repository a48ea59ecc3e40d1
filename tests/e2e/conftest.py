"""Fixtures that run the whole gateway (sandbox, router, edge) as real processes.

The session `stack` is parametrised by control DB: every test that uses it runs once on
SQLite (the single-machine default) and once on PostgreSQL (production's), each stack on
a database of its own. A test whose subject does not touch the control DB may run on
SQLite only, with `@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)`: that is
the fixture's first parameter, so pytest keeps it in the SQLite group (any other
function-level parametrisation of `stack` would interleave the groups and restart the
session stack between tests). PostgreSQL-only cases use a stack of their own
(`start_stack`), as test_caps does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import backends
import httpx
import openai
import pytest
import yaml
from pg import create_database
from sqlalchemy.engine import make_url

from aig_common.money import apply_markup
from catalog.estimate import estimate_prompt_tokens, worst_case_output_tokens
from catalog.models import DEFAULT_CATALOG_PATH, ChatModel, load_catalog
from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret

# One model of each provider family, as the catalog names them.
FAMILY_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "google": "gemini-2.5-flash",
    "openrouter": "mistral-medium-3",
}


# Hedging is off by default; the test catalog turns it on for one model.
HEDGED_MODEL = "gpt-4.1-mini"
HEDGE_AFTER_MS = 300
BREAKER_FAILURES = 3
BREAKER_COOLDOWN_S = 1.0
# Failed-auth throttling: well above what the suite's own 401 tests spend from 127.0.0.1
# in any minute (the bucket refills at 30 a minute), so no test is refused for another's
# deliberate failures; the tests of the throttle itself speak from addresses of their own.
AUTH_FAILURE_BURST = 100
# For clients held across a test or a session: an idle pooled connection is dropped before
# uvicorn's 5 s keep-alive closes it, or the next request can race the server's close and
# see "Server disconnected without sending a response".
IDLE_CONNECTIONS_DROPPED_EARLY = httpx.Limits(keepalive_expiry=2)
BODY_TIMEOUT_S = 2
# Test receivers listen on 127.0.0.1, which the SSRF guard refuses unless allow-listed;
# retries come after 0.2 s instead of 5 s … 24 h. The lease outlives the 2 s timeout and
# the waits of a loaded machine (an expired lease means a second send of that attempt).
WEBHOOK_TEST_ENV = {
    "AIG_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "AIG_WEBHOOKS_RETRY_SCHEDULE_S": ",".join(["0.2"] * 7),
    "AIG_WEBHOOKS_POLL_INTERVAL_S": "0.05",
    "AIG_WEBHOOKS_TIMEOUT_S": "2",
    "AIG_WEBHOOKS_LEASE_S": "20",
}


# Provider instances only the test catalog has: each is one data row, served by the sandbox.
# An OpenAI-compatible server (vLLM, Ollama, Groq...) under a name of its own, and an Azure
# OpenAI resource, each with one model that is nowhere else.
LOCAL_PROVIDER = "local-vllm"
LOCAL_MODEL = "local-llama"
LOCAL_UPSTREAM_ID = "llama-3.1-8b-instruct"
AZURE_PROVIDER = "azure-east"
AZURE_MODEL = "azure-gpt-4o-mini"
AZURE_DEPLOYMENT = "prod-4o-mini"
AZURE_API_VERSION = "2024-10-21"
EXTRA_PROVIDER_KEYS = {"AIG_TEST_LOCAL_KEY": "local-secret", "AIG_TEST_AZURE_KEY": "azure-secret"}


def close_breakers(client: openai.OpenAI, primaries: dict[str, str]) -> None:
    """A successful call pinned to each model's primary route (`primaries`: model ->
    provider) closes that provider's breaker and resets its failure count, so one test's
    faults never turn into another's open breaker. An open breaker refuses the pinned call
    at once: wait for its half-open probe and try again, 3 times at most."""
    for model, provider in primaries.items():
        for _ in range(3):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": "ok?"}],
                    extra_body={"aig": {"fallbacks": False}},
                )
            except openai.APIStatusError:
                time.sleep(BREAKER_COOLDOWN_S + 0.1)
                continue
            assert raw.headers["x-aig-provider"] == provider
            break
        else:
            raise AssertionError(f"{provider}'s breaker stayed open after 3 tries")


def _served_only_by(
    provider: str, model_id: str, upstream_id: str, template: dict[str, Any]
) -> dict[str, Any]:
    return {
        **{key: value for key, value in template.items() if key not in ("fallbacks", "aliases")},
        "id": model_id,
        "provider": provider,
        "upstream_id": upstream_id,
    }


def _test_catalog(directory: Path, sandbox_url: str) -> Path:
    document = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())
    for entry in document["chat_models"]:
        if entry["id"] == HEDGED_MODEL:
            entry["hedge_after_ms"] = HEDGE_AFTER_MS
    document["providers"] += [
        {
            "name": LOCAL_PROVIDER,
            "type": "openai",
            "base_url": f"{sandbox_url}/openai/v1",
            "key_env": "AIG_TEST_LOCAL_KEY",
        },
        {
            "name": AZURE_PROVIDER,
            "type": "azure_openai",
            "base_url": f"{sandbox_url}/azure",
            "key_env": "AIG_TEST_AZURE_KEY",
            "api_version": AZURE_API_VERSION,
        },
    ]
    template = next(e for e in document["chat_models"] if e["id"] == "gpt-4o-mini")
    document["chat_models"] += [
        _served_only_by(LOCAL_PROVIDER, LOCAL_MODEL, LOCAL_UPSTREAM_ID, template),
        _served_only_by(AZURE_PROVIDER, AZURE_MODEL, AZURE_DEPLOYMENT, template),
    ]
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


CONTROL_DBS = ("sqlite", "postgres")


def _control_database_url(request: pytest.FixtureRequest, control_db: str, var_dir: Path) -> str:
    """A fresh, empty control DB for one stack: stacks never share a database, so one's
    accounts, caps and reservations cannot leak into another's assertions."""
    if control_db == "sqlite":
        return f"sqlite+aiosqlite:///{var_dir / 'aig.db'}"
    if control_db != "postgres":
        raise ValueError(f"unknown control DB {control_db!r}; expected one of {CONTROL_DBS}")
    server: str = request.getfixturevalue("postgres_url")
    return asyncio.run(create_database(server))


def start_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    control_db: str,
    env: Callable[[Path, StackPorts], dict[str, str]],
    extra_edges: int = 0,
    extra_routers: int = 0,
    extra_consumers: int = 0,
    in_process_router: bool = False,
) -> Stack:
    """A running stack on free ports with a control DB of its own, plus `env(var_dir,
    ports)`. In containers mode (tests/backends.py) it also gets a Kafka broker and a
    ClickHouse server of its own; locally it runs its own broker from the jars and chDB.
    Stop it when done."""
    var_dir: Path = tmp_path_factory.mktemp(f"aig-{control_db}")
    ports = StackPorts.free()
    servers: dict[str, str] = {}
    if backends.mode() == "containers":
        containers: backends.ContainerServers = request.getfixturevalue("container_servers")
        servers = containers.stack_env()
    running = Stack(
        var_dir=var_dir,
        ports=ports,
        admin_token=new_secret("aig-admin-"),
        key_pepper=new_secret(""),
        database_url=_control_database_url(request, control_db, var_dir),
        # Provider keys in the developer's environment must not send tests to real providers.
        env={**{key: "" for key in PROVIDER_KEYS}, **servers, **env(var_dir, ports)},
        extra_edges=extra_edges,
        extra_routers=extra_routers,
        extra_consumers=extra_consumers,
        in_process_router=in_process_router,
    )
    running.start()
    return running


JOBS_LEASE_S = 3


def _session_stack_env(var_dir: Path, ports: StackPorts) -> dict[str, str]:
    return {
        **EXTRA_PROVIDER_KEYS,
        "AIG_CATALOG_PATH": str(_test_catalog(var_dir, f"http://127.0.0.1:{ports.sandbox}")),
        # Reloads are seen within a poll; tests edit the catalog file.
        "AIG_CATALOG_POLL_S": "0.2",
        "AIG_BREAKER_FAILURES": str(BREAKER_FAILURES),
        "AIG_BREAKER_COOLDOWN_S": str(BREAKER_COOLDOWN_S),
        "AIG_AUTH_FAILURE_BURST": str(AUTH_FAILURE_BURST),
        "AIG_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        **WEBHOOK_TEST_ENV,
        # Media tasks are polled often, so a simulated render is noticed at once.
        "AIG_JOBS_POLL_INITIAL_S": "0.2",
        "AIG_JOBS_POLL_MAX_S": "0.5",
        # A replica's tasks are adopted within seconds once it is gone for good.
        "AIG_JOBS_LEASE_S": str(JOBS_LEASE_S),
    }


@pytest.fixture(scope="session", params=CONTROL_DBS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = start_stack(request, tmp_path_factory, request.param, _session_stack_env)
    yield running
    running.stop()


class Sandbox:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def requests(self, provider: str) -> list[dict[str, Any]]:
        response = self.http.get("/_sandbox/requests", params={"provider": provider})
        response.raise_for_status()
        return list(response.json()["data"])

    def last_request(self, provider: str) -> dict[str, Any]:
        seen = self.requests(provider)
        assert seen, f"the {provider} simulator received no request"
        return seen[-1]

    def fault(
        self,
        provider: str,
        status: int,
        count: int = 1,
        after_chunks: int | None = None,
        delay_ms: int = 0,
    ) -> None:
        fault = {
            "provider": provider,
            "status": status,
            "count": count,
            "after_chunks": after_chunks,
            "delay_ms": delay_ms,
        }
        self.http.post("/_sandbox/faults", json=fault).raise_for_status()

    def reset(self) -> None:
        self.http.delete("/_sandbox/faults").raise_for_status()
        self.http.delete("/_sandbox/requests").raise_for_status()


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[Sandbox]:
    simulator = Sandbox(stack.sandbox_url)
    simulator.reset()
    yield simulator
    simulator.reset()


async def control_db_connection(stack: Stack) -> asyncpg.Connection:
    """A connection to the PostgreSQL control DB of `stack`, to read what the services wrote."""
    url = make_url(stack.database_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


def admin_client(stack: Stack) -> httpx.Client:
    """The operator's API of `stack`, as its admin."""
    return httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=10,
        limits=IDLE_CONNECTIONS_DROPPED_EARLY,
    )


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with admin_client(stack) as client:
        yield client


def create_key(
    admin: httpx.Client, name: str = "tests", credits_usd: str = "10000.00"
) -> dict[str, Any]:
    account = admin.post("/accounts", json={"name": name, "credits_usd": credits_usd})
    assert account.status_code == 201, account.text
    key = admin.post("/keys", json={"account_id": account.json()["id"], "name": name})
    assert key.status_code == 201, key.text
    return dict(key.json())


@pytest.fixture(scope="session")
def api_key(admin: httpx.Client) -> str:
    return str(create_key(admin)["key"])


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return f"{stack.edge_url}/v1"


@pytest.fixture(scope="session")
def client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


@pytest.fixture(scope="session")
def async_client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)


@pytest.fixture(scope="session")
def edge(stack: Stack, api_key: str) -> Iterator[httpx.Client]:
    with edge_client(stack, api_key) as client:
        yield client


def edge_client(stack: Stack, api_key: str) -> httpx.Client:
    """Raw HTTP to the edge, for inputs the SDK would never send."""
    return httpx.Client(
        base_url=stack.edge_url,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=30,
        limits=IDLE_CONNECTIONS_DROPPED_EARLY,
    )


def worst_case_nano_usd(body: dict[str, Any], markup_basis_points: int = 4000) -> int:
    """What admission reserves for `body`: the dearest member of its route chain, marked up."""
    catalog = load_catalog(DEFAULT_CATALOG_PATH)
    primary = catalog.chat(body["model"])
    assert primary is not None
    chain: list[ChatModel | None] = [primary]
    if body.get("aig", {}).get("fallbacks", True) is not False:
        chain.extend(catalog.chat(route.model_id) for route in primary.fallbacks)
    worst = max(
        model.worst_case_cost_nano_usd(
            estimate_prompt_tokens(body, tokens_per_image=model.image_input_tokens),
            worst_case_output_tokens(body, model),
        )
        for model in chain
        if model is not None
    )
    return apply_markup(worst, markup_basis_points)


def wait_until_settled(base_url: str, api_key: str, timeout_s: float = 60) -> dict[str, Any]:
    """Polls /v1/me until no reservation of the key's account is in flight, then returns a
    /v1/me read after that.

    /v1/me reads the balance before the reservations: the answer that first shows none in
    flight may hold the balance from before the settlement that released them. Settlement
    is one transaction, so a read that starts after it sees the debit."""
    deadline = time.monotonic() + timeout_s

    def read() -> dict[str, Any]:
        return dict(
            httpx.get(
                f"{base_url}/me", headers={"authorization": f"Bearer {api_key}"}, timeout=10
            ).json()
        )

    while True:
        me = read()
        if me["account"]["caps"]["daily"]["reserved_usd"] == "0.00":
            return read()
        if time.monotonic() > deadline:
            raise TimeoutError(f"reservations still held after {timeout_s} s: {me}")
        time.sleep(0.25)


def usage_rows(base_url: str, api_key: str, group_by: str = "model") -> list[dict[str, Any]]:
    """The key's account usage from the ledger (GET /v1/usage), all time."""
    response = httpx.get(
        f"{base_url}/usage",
        params={"group_by": group_by, "start": "2000-01-01T00:00:00Z"},
        headers={"authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait_for_usage(
    base_url: str, api_key: str, calls: int, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Polls the ledger until it holds `calls` calls of the key's account."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = usage_rows(base_url, api_key)
        if sum(int(row["calls"]) for row in rows) >= calls:
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"ledger has {rows}, expected {calls} calls")
        time.sleep(0.3)


def wait_for_task(
    client: httpx.Client, task_id: str, states: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    """Polls recordInfo (through `client`, based at the edge's /v1 with the task owner's key)
    until the task is in one of `states`; returns its record."""
    deadline = time.monotonic() + timeout_s
    while True:
        record: dict[str, Any] = client.get("/jobs/recordInfo", params={"taskId": task_id}).json()[
            "data"
        ]
        if record["state"] in states:
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {record['state']}: {record}")
        time.sleep(0.2)


def list_price_nano_usd(model_id: str, usage: Any) -> int:
    """A chat call's upstream cost from the catalog's list prices and the usage the client
    itself received (an OpenAI SDK `usage` object). Short prompts only: no long-context tier."""
    model = load_catalog().chat(model_id)
    assert model is not None
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    price = (usage.prompt_tokens - cached) * model.input_nano_usd_per_token
    price += usage.completion_tokens * model.output_nano_usd_per_token
    if cached:
        price += cached * model.cached_input_nano_usd_per_token
    return int(price)


@contextlib.contextmanager
def sandbox_settings(stack: Stack, **changes: int) -> Iterator[None]:
    """Changes the sandbox's run-time settings (`/_sandbox/config`) and restores them."""
    # The client idles through the caller's whole block before it restores the settings.
    with httpx.Client(
        base_url=stack.sandbox_url, timeout=10, limits=IDLE_CONNECTIONS_DROPPED_EARLY
    ) as sandbox:
        before = sandbox.get("/_sandbox/config").json()
        sandbox.post("/_sandbox/config", json=changes).raise_for_status()
        try:
            yield
        finally:
            restore = {name: before[name] for name in changes}
            sandbox.post("/_sandbox/config", json=restore).raise_for_status()
