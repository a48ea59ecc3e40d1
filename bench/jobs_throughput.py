"""Issue 10's media-task benchmark, on the whole local stack (edge → Kafka → jobs → the fal
simulator → storage → billing): python -m bench.jobs_throughput [TASKS] [RENDER_MS]

- createTask: tasks admitted per second with 32 callers at once (auth, schema check, the
  worst-case reservation, the task row, the TaskRequested event), and its p50/p99;
- recordInfo: p50/p99 with 16 callers polling while the tasks render;
- completion lag: completeTime - createTime - the simulated render time, p50/p99, i.e. what
  aig adds between a provider's render ending and the client seeing `success` (with the
  polling defaults, a provider callback is not used here);
- CPU of edge and jobs per task.

The figures are this machine's: every process of the stack shares its cores with the load
generator, so the output also records the load average.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devstack.stack import Stack

from .aig_target import start_stack
from .procs import cpu_seconds
from .samples import sample_at

MODEL = "flux-kontext-pro"
CREATORS = 32
READERS = 16
OUT = Path(__file__).parent / "out" / "jobs_throughput.json"


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(sample_at(values, 0.50) * 1000, 2),
        "p99_ms": round(sample_at(values, 0.99) * 1000, 2),
    }


async def _create_all(client: httpx.AsyncClient, count: int) -> tuple[list[str], list[float]]:
    task_ids: list[str] = []
    latencies: list[float] = []
    queue = iter(range(count))

    async def creator() -> None:
        for index in queue:
            started = time.perf_counter()
            answer = await client.post(
                "/v1/jobs/createTask",
                json={"model": MODEL, "input": {"prompt": f"bench fox {index}"}},
            )
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"createTask answered {answer.status_code}: {answer.text}")
            task_ids.append(answer.json()["data"]["taskId"])

    await asyncio.gather(*(creator() for _ in range(CREATORS)))
    return task_ids, latencies


async def _poll_until_done(
    client: httpx.AsyncClient, task_ids: list[str], timeout_s: float
) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """READERS callers poll recordInfo round-robin until every task is final."""
    final: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    pending = list(task_ids)
    deadline = time.monotonic() + timeout_s

    async def reader(offset: int) -> None:
        index = offset
        while len(final) < len(task_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(task_ids) - len(final)} tasks never finished")
            task_id = pending[index % len(pending)]
            index += READERS
            if task_id in final:
                await asyncio.sleep(0)
                continue
            started = time.perf_counter()
            answer = await client.get("/v1/jobs/recordInfo", params={"taskId": task_id})
            latencies.append(time.perf_counter() - started)
            record = answer.json()["data"]
            if record["state"] in ("success", "fail"):
                final[task_id] = record

    await asyncio.gather(*(reader(offset) for offset in range(READERS)))
    return final, latencies


def _pids(stack: Stack, module: str) -> list[int]:
    return [
        service.process.pid
        for service in stack.services
        if service.module == module and service.process is not None
    ]


async def _drive(stack: Stack, key: str, count: int) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CREATORS + READERS)
    async with httpx.AsyncClient(
        base_url=stack.edge_url, headers=headers, timeout=60, limits=limits
    ) as client:
        started = time.perf_counter()
        task_ids, create_latencies = await _create_all(client, count)
        create_seconds = time.perf_counter() - started
        final, read_latencies = await _poll_until_done(client, task_ids, timeout_s=600)
    return {
        "create_seconds": create_seconds,
        "create_latencies": create_latencies,
        "read_latencies": read_latencies,
        "final": final,
    }


def measure(count: int, render_ms: int, database_url: str | None = None) -> dict[str, Any]:
    """On SQLite unless `database_url` names another control database."""
    with tempfile.TemporaryDirectory(prefix="aig-bench-jobs-") as directory:
        var_dir = Path(directory)
        stack = start_stack(var_dir, sandbox_env={}, database_url=database_url)
        try:
            httpx.post(
                f"{stack.sandbox_url}/_sandbox/config", json={"media_render_ms": render_ms}
            ).raise_for_status()
            admin = httpx.Client(
                base_url=f"{stack.edge_url}/admin/v1",
                headers={"authorization": f"Bearer {stack.admin_token}"},
            )
            account = admin.post("/accounts", json={"name": "bench", "credits_usd": "100000.00"})
            account.raise_for_status()
            key = admin.post("/keys", json={"account_id": account.json()["id"], "name": "bench"})
            key.raise_for_status()
            pids = {"edge": _pids(stack, "edge"), "jobs": _pids(stack, "jobs")}
            cpu_before = {name: sum(map(cpu_seconds, found)) for name, found in pids.items()}
            driven = asyncio.run(_drive(stack, key.json()["key"], count))
            cpu_after = {name: sum(map(cpu_seconds, found)) for name, found in pids.items()}
        finally:
            stack.stop()
    final: dict[str, dict[str, Any]] = driven["final"]
    succeeded = [record for record in final.values() if record["state"] == "success"]
    lags = [
        (record["completeTime"] - record["createTime"] - render_ms) / 1000 for record in succeeded
    ]
    return {
        "control_db": "postgresql" if database_url and "postgresql" in database_url else "sqlite",
        "tasks": count,
        "succeeded": len(succeeded),
        "render_ms": render_ms,
        "create_tasks_per_s": round(count / driven["create_seconds"], 1),
        "create": _ms(driven["create_latencies"]),
        "record_info": {**_ms(driven["read_latencies"]), "calls": len(driven["read_latencies"])},
        "completion_lag": _ms(lags) if lags else None,
        "cpu_ms_per_task": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / count, 2) for name in pids
        },
        "load_average": os.getloadavg(),
    }


def main() -> None:
    """python -m bench.jobs_throughput [TASKS] [RENDER_MS] [sqlite|postgresql]"""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    render_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    backend = sys.argv[3] if len(sys.argv) > 3 else "postgresql"
    if backend == "sqlite":
        results = measure(count, render_ms)
    else:
        from tests.pg import PostgresServer

        server = PostgresServer.start()
        try:
            results = measure(count, render_ms, server.url())
        finally:
            server.stop()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
