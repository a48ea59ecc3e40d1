"""aig_common.batches: what waits behind a write goes in the next one, in order, and the
first None ends the writing; a Cork writes what one loop turn put, together, at its end."""

from __future__ import annotations

import asyncio

from aig_common.batches import Cork, write_in_batches


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


class _Written(Cork[int]):
    """A cork that keeps what it writes."""

    def __init__(self, *, held: bool = False) -> None:
        super().__init__(held=held)
        self.written: list[list[int]] = []

    def write(self, items: list[int]) -> None:
        self.written.append(items)


async def _next_turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_cork_writes_what_one_turn_put_together_at_its_end() -> None:
    cork = _Written()
    written = cork.written
    for item in (1, 2, 3):
        cork.put(item)
    assert written == []  # nothing before the turn ends
    await _next_turns()
    cork.put(4)
    await _next_turns()
    assert written == [[1, 2, 3], [4]]


async def test_a_held_cork_keeps_everything_until_released() -> None:
    cork = _Written(held=True)
    written = cork.written
    cork.put(1)
    cork.write_soon()
    await _next_turns()
    assert written == []
    cork.put(2)
    cork.release()
    await _next_turns()
    assert written == [[1, 2]]


async def test_write_soon_writes_even_with_nothing_waiting_and_discard_drops() -> None:
    cork = _Written()
    written = cork.written
    cork.write_soon()  # an end marker with no frames still needs its write
    await _next_turns()
    cork.put(5)
    cork.discard()
    await _next_turns()
    assert written == [[], []]
