"""aig's whole stack, started exactly as `devstack.Stack` starts it, with a funded API key."""

from __future__ import annotations

from pathlib import Path

import httpx

from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret

from .procs import ProcessGroup

# The upstream stand-in; every other service the stack runs (edge, router, billing, ...) is
# the gateway, and third-party processes it runs (the Kafka broker) are its infrastructure.
UPSTREAM_SERVICES = {"sandbox"}


def start_stack(
    var_dir: Path, sandbox_env: dict[str, str], database_url: str | None = None
) -> Stack:
    stack = Stack(
        var_dir=var_dir,
        ports=StackPorts.free(),
        admin_token=new_secret("aig-admin-"),
        key_pepper=new_secret(""),
        database_url=database_url or f"sqlite+aiosqlite:///{var_dir / 'aig.db'}",
        # No real provider keys: every provider is the sandbox, as in the tests.
        env={**{key: "" for key in PROVIDER_KEYS}, **sandbox_env},
    )
    stack.start()
    return stack


def gateway_processes(stack: Stack) -> ProcessGroup:
    return ProcessGroup(
        {
            service.name: service.process.pid
            for service in stack.services
            if service.process is not None and service.name not in UPSTREAM_SERVICES
        }
    )


def infra_processes(stack: Stack) -> ProcessGroup:
    """The broker (and whatever else Stack runs outside `services`) when it is a local process."""
    roots: dict[str, int] = {}
    for name in ("kafka",):
        process = getattr(getattr(stack, name, None), "process", None)
        if process is not None and process.poll() is None:
            roots[name] = process.pid
    return ProcessGroup(roots)


def sandbox_process(stack: Stack) -> ProcessGroup:
    return ProcessGroup(
        {
            service.name: service.process.pid
            for service in stack.services
            if service.process is not None and service.name in UPSTREAM_SERVICES
        }
    )


def create_api_key(stack: Stack) -> str:
    """An account with credits no benchmark can exhaust, so caps never refuse a call."""
    with httpx.Client(
        base_url=f"{stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=10,
    ) as admin:
        account = admin.post("/accounts", json={"name": "bench", "credits_usd": "1000000.00"})
        account.raise_for_status()
        key = admin.post("/keys", json={"account_id": account.json()["id"], "name": "bench"})
        key.raise_for_status()
        return str(key.json()["key"])
