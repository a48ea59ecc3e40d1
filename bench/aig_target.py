"""aig's whole stack, started exactly as `devstack.Stack` starts it, with a funded API key."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from devstack.processes import Service, free_port
from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret

from .procs import ProcessGroup
from .settlement import Billing, sqlite_file

# The upstream stand-in; every other service the stack runs (edge, router, billing, ...) is
# the gateway, and third-party processes it runs (the Kafka broker) are its infrastructure.
UPSTREAM_SERVICES = {"sandbox"}


def start_stack(
    var_dir: Path,
    sandbox_env: dict[str, str],
    database_url: str | None = None,
    *,
    edges: int = 1,
    routers: int = 1,
    with_sandbox: bool = True,
) -> Stack:
    """`edges` edge processes share one port (SO_REUSEPORT) and every edge round-robins over
    `routers` routers, as `devstack.Stack`'s replicas do. Without the sandbox, the caller
    serves the upstream on `stack.ports.sandbox` (bench/compiled_upstream.py)."""
    stack = Stack(
        var_dir=var_dir,
        ports=StackPorts.free(),
        admin_token=new_secret("aig-admin-"),
        key_pepper=new_secret(""),
        database_url=database_url or f"sqlite+aiosqlite:///{var_dir / 'aig.db'}",
        # No real provider keys: every provider is the sandbox, as in the tests.
        env={
            **{key: "" for key in PROVIDER_KEYS},
            **sandbox_env,
            **({"AIG_EDGE_REUSE_PORT": "1"} if edges > 1 else {}),
        },
        extra_routers=routers - 1,
        with_sandbox=with_sandbox,
    )
    stack.start()
    try:
        for replica in range(1, edges):
            _start_shared_port_edge(stack, f"edge-{replica}")
    except BaseException:
        stack.stop()
        raise
    return stack


def start_in_process_edges(stack: Stack, count: int = 1) -> str:
    """`count` more edges with the router inside their process (`AIG_EDGE_IN_PROCESS_ROUTER`),
    sharing one port of their own (SO_REUSEPORT when more than one), beside the stack's
    edges and routers: the same control DB, broker and billing, so the two ways of running
    the router are measured side by side. Returns their URL."""
    port = free_port()
    for index in range(count):
        name = f"edge-inproc-{index}" if count > 1 else "edge-inproc"
        start_in_process_edge(stack, name, port, reuse_port=count > 1)
    return f"http://127.0.0.1:{port}"


def start_in_process_edge(
    stack: Stack,
    name: str,
    port: int,
    *,
    reuse_port: bool = False,
    module: str = "edge",
    extra_env: dict[str, str] | None = None,
) -> Service:
    """One edge with the router in its process on `port`, configured as the stack's first
    edge; `module` runs in its place (a wrapped edge), with `extra_env` added."""
    first = stack.service("edge")
    edge = Service(
        name,
        module,
        {
            **stack.replica_env(first.env, name),
            "AIG_EDGE_PORT": str(port),
            "AIG_EDGE_IN_PROCESS_ROUTER": "1",
            "AIG_EDGE_REUSE_PORT": "1" if reuse_port else "0",
            **(extra_env or {}),
        },
        f"http://127.0.0.1:{port}/readyz",
        first.log_path.with_name(f"{name}.log"),
    )
    stack.services.append(edge)  # stopped with the stack, even if it never gets ready
    edge.start()
    wait_listening(edge)
    return edge


def _start_shared_port_edge(stack: Stack, name: str) -> None:
    """One more edge on the first edge's port. devstack's own extra edges each get a port
    of their own (the scale-out test calls them in turn); a load generator needs one
    address, so this one binds the same port with SO_REUSEPORT and the kernel balances."""
    first = stack.service("edge")
    edge = Service(
        name,
        "edge",
        stack.replica_env(first.env, name),
        first.ready_url,
        first.log_path.with_name(f"{name}.log"),
    )
    edge.start()
    stack.services.append(edge)
    wait_listening(edge)


def wait_listening(edge: Service) -> None:
    """/readyz on a shared port may be answered by another edge: wait for this one's own
    line that it listens."""
    deadline = time.monotonic() + 60
    while "Application startup complete" not in _read(edge.log_path):
        if not edge.running() or time.monotonic() > deadline:
            raise RuntimeError(f"{edge.name} did not start:\n{_read(edge.log_path)[-3000:]}")
        time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def billing(stack: Stack) -> Billing:
    """Where the settlement lag is read: billing's /metrics and the control DB."""
    return Billing(
        [f"{url}/metrics" for url in stack.billing_urls()], sqlite_file(stack.database_url)
    )


def gateway_processes(stack: Stack, *, in_process_router: bool = False) -> ProcessGroup:
    """aig's processes as one target: every service but the upstream, with either the
    edges that call a router apart and the routers, or (`in_process_router`) the edges
    that run their router inside them."""
    return ProcessGroup(
        {
            service.name: service.process.pid
            for service in stack.services
            if service.process is not None
            and service.name not in UPSTREAM_SERVICES
            and _serves(service, in_process_router)
        }
    )


def _serves(service: Service, in_process_router: bool) -> bool:
    if service.module == "router":
        return not in_process_router
    if service.module == "edge":
        return (service.env.get("AIG_EDGE_IN_PROCESS_ROUTER") == "1") == in_process_router
    return True


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
