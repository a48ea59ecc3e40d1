"""aig_common.batches: what waits behind a write goes in the next one, in order, and the
first None ends the writing."""

from __future__ import annotations

import asyncio

from aig_common.batches import write_in_batches


async def test_items_waiting_behind_a_write_share_the_next_and_none_ends_it() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    written: list[list[int]] = []
    first_write = asyncio.Event()
    release = asyncio.Event()

    async def write(items: list[int]) -> None:
        written.append(items)
        first_write.set()
        await release.wait()  # a slow write: more items queue meanwhile

    queue.put_nowait(1)
    writer = asyncio.create_task(write_in_batches(queue, write))
    await first_write.wait()
    for item in (2, 3, 4, None, 5):  # 5 comes after the end: never written
        queue.put_nowait(item)
    release.set()
    await asyncio.wait_for(writer, 5)
    assert written == [[1], [2, 3, 4]]


async def test_a_none_alone_ends_without_an_empty_write() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    written: list[list[int]] = []

    async def write(items: list[int]) -> None:
        written.append(items)

    queue.put_nowait(None)
    await asyncio.wait_for(write_in_batches(queue, write), 5)
    assert written == []
