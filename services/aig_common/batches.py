"""Writing a queue of messages as batches: what both ends of a Router.Calls gRPC stream do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

Item = TypeVar("Item")


async def write_in_batches(
    queue: asyncio.Queue[Item | None], write: Callable[[list[Item]], Awaitable[None]]
) -> None:
    """Writes every item put on `queue`, in order, until a None: each write carries every
    item waiting when it starts. gRPC allows one write in flight per call, so under load
    what queues behind a write shares the next one instead of waiting a write each."""
    while True:
        items: list[Item] = []
        item = await queue.get()
        while item is not None:
            items.append(item)
            if queue.empty():
                break
            item = queue.get_nowait()
        if items:
            await write(items)
        if item is None:
            return
