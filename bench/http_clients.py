"""Why the router talks to upstreams with its own HTTP/1.1 client (router/http1.py): CPU per
call of httpx, aiohttp and that client against the sandbox, the same requests at the same
concurrency, in one process, alternating.

python -m bench.http_clients (also part of `python -m bench.extras`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson
import uvloop

from devstack.processes import Service, free_port
from router.http1 import Http1Client, RequestTarget

CALLS = 2_000
CONCURRENCY = 16
BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def _cpu_per_call_us(call: Callable[[], Awaitable[None]]) -> float:
    for _ in range(100):  # warm the pool
        await call()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await call()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(CALLS)))
    return (time.process_time() - started) / CALLS * 1e6


async def _measure(url: str) -> dict[str, list[float]]:
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
    figures: dict[str, list[float]] = {"httpx": [], "aiohttp": [], "http1": []}
    http1 = Http1Client(connect_timeout_s=5, read_timeout_s=30)
    target = RequestTarget.post(url, HEADERS.items())
    async with (
        httpx.AsyncClient(limits=limits) as httpx_client,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session,
    ):

        async def with_httpx() -> None:
            response = await httpx_client.post(url, content=BODY, headers=HEADERS)
            if response.status_code != 200:
                raise RuntimeError(f"sandbox answered {response.status_code}")

        async def with_aiohttp() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"sandbox answered {response.status}")

        async def with_http1() -> None:
            response = await http1.post(target, BODY)
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"sandbox answered {response.status}")

        for _ in range(2):  # alternating, so a noisy neighbour hits all three
            figures["httpx"].append(await _cpu_per_call_us(with_httpx))
            figures["aiohttp"].append(await _cpu_per_call_us(with_aiohttp))
            figures["http1"].append(await _cpu_per_call_us(with_http1))
    http1.close()
    return figures


def measure() -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        sandbox = Service(
            name="sandbox",
            module="sandbox",
            env={
                "AIG_SANDBOX_HOST": "127.0.0.1",
                "AIG_SANDBOX_PORT": str(port),
                "AIG_SANDBOX_LATENCY_MS": "5",
            },
            ready_url=f"http://127.0.0.1:{port}/healthz",
            log_path=Path(directory) / "sandbox.log",
        )
        sandbox.start()
        try:
            sandbox.wait_ready()
            url = f"http://127.0.0.1:{port}/openai/v1/chat/completions"
            figures = uvloop.run(_measure(url))
        finally:
            sandbox.stop()
    best = {name: round(min(values), 1) for name, values in figures.items()}
    return {
        "calls": CALLS,
        "concurrency": CONCURRENCY,
        "cpu_us_per_call": best,
        "httpx_over_aiohttp": round(best["httpx"] / best["aiohttp"], 1),
        "aiohttp_over_http1": round(best["aiohttp"] / best["http1"], 1),
    }


if __name__ == "__main__":
    print(orjson.dumps(measure(), option=orjson.OPT_INDENT_2).decode())
