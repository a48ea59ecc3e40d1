"""Time to first token, inter-chunk gaps and total time of streamed chat completions.

oha times whole responses only, so this one measurement uses a small httpx client: it
reads the SSE stream and notes when each event carrying content arrives (the first one is
the time to first token; the time between two of them is an inter-chunk gap). Every target
is measured by the same client on the same machine, so its own cost cancels in overheads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import orjson

from .loadgen import Request


@dataclass
class StreamResult:
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    # Every gap between two consecutive content events of one stream, over all streams.
    gap_ms: list[float] = field(default_factory=list)
    content_events: list[int] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def note_error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def extend(self, other: StreamResult) -> None:
        """Adds another round's calls of the same target to this one's."""
        self.ttft_ms += other.ttft_ms
        self.total_ms += other.total_ms
        self.gap_ms += other.gap_ms
        self.content_events += other.content_events
        self.errors += other.errors
        for kind, count in other.error_kinds.items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count


def _has_content(line: str) -> bool:
    if not line.startswith("data:"):
        return False
    payload = line[5:].strip()
    if payload == "[DONE]":
        return False
    event = orjson.loads(payload)
    return any((choice.get("delta") or {}).get("content") for choice in event.get("choices", []))


async def _one(client: httpx.AsyncClient, request: Request, result: StreamResult) -> None:
    started = time.perf_counter()
    first: float | None = None
    last = 0.0
    gaps: list[float] = []
    events = 0
    try:
        async with client.stream(
            "POST",
            request.url,
            content=request.body,
            headers={
                "authorization": f"Bearer {request.api_key}",
                "content-type": "application/json",
            },
        ) as response:
            if response.status_code != 200:
                await response.aread()
                result.note_error(f"http {response.status_code}")
                return
            async for line in response.aiter_lines():
                if _has_content(line):
                    now = time.perf_counter()
                    events += 1
                    if first is None:
                        first = now
                    else:
                        gaps.append((now - last) * 1000)
                    last = now
    except httpx.HTTPError as exc:
        result.note_error(type(exc).__name__)
        return
    finished = time.perf_counter()
    if first is None:
        result.note_error("no content")
        return
    result.ttft_ms.append((first - started) * 1000)
    result.total_ms.append((finished - started) * 1000)
    result.gap_ms.extend(gaps)
    result.content_events.append(events)


async def _measure(request: Request, count: int, concurrency: int) -> StreamResult:
    result = StreamResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        # One warm-up call per connection so connection setup is not counted as latency.
        await asyncio.gather(*(_one(client, request, StreamResult()) for _ in range(concurrency)))
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(count):
            queue.put_nowait(None)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await _one(client, request, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def measure_streaming(request: Request, *, count: int, concurrency: int) -> StreamResult:
    """`count` streamed calls, `concurrency` at a time, after a warm-up."""
    return asyncio.run(_measure(request, count, concurrency))
