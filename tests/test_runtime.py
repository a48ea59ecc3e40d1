"""aig_common.runtime: with the services' collector settings, a reference cycle made after
start-up waits for a collection that may not come for many minutes; `TimedCollections`
frees young cycles within its young interval and cycles through old objects within its
full one, and stops when told."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from aig_common.runtime import TimedCollections, freeze_startup_heap


@pytest.fixture
def services_collector() -> Iterator[None]:
    """The collector as every service sets it up, undone afterwards for the other tests."""
    thresholds = gc.get_threshold()
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def _garbage_cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def _in_oldest_generation(node: _Node) -> bool:
    return any(found is node for found in gc.get_objects(generation=2))


async def test_young_cycles_wait_for_the_collector_and_timed_collections_free_them(
    services_collector: None,
) -> None:
    # Synchronous, so no other task on the session's loop allocates meanwhile (an earlier
    # version slept 0.2 s here, and other tests' leftovers once allocated enough in that time
    # to trigger a collection by count). gc.collect(0) starts the count from zero; 5,000
    # tracked allocations would trigger 7 young collections under the default threshold
    # (700) and none under the services' (50,000).
    gc.collect(0)
    left_alone = _garbage_cycle()
    allocated: list[list[int]] = [[] for _ in range(5_000)]
    assert left_alone() is not None  # no collection came: the settings' cost
    del allocated

    collections = TimedCollections(young_every_s=0.05, full_every_s=60)
    collections.start()
    try:
        first = _garbage_cycle()
        await asyncio.sleep(0.2)
        assert first() is None and left_alone() is None
        second = _garbage_cycle()  # the timer runs again, not once
        await asyncio.sleep(0.2)
        assert second() is None
    finally:
        collections.stop()

    # Collection by count off while the stopped timer is given its chance: other tests'
    # leftover tasks run on this loop during the sleep, and in one CI run (2026-12-08) they
    # allocated enough to trigger a young collection by count, which freed this cycle as a
    # timer would have. The timer collects by explicit gc.collect calls, which gc.disable()
    # does not stop, so a timer still running after stop() fails this as before.
    after_stop = _garbage_cycle()
    gc.disable()
    try:
        await asyncio.sleep(0.2)
    finally:
        gc.enable()
    assert after_stop() is not None
    gc.collect()
    assert after_stop() is None


async def test_a_cycle_through_an_old_object_waits_for_the_full_collection(
    services_collector: None,
) -> None:
    # The full interval leaves 1.4 s to spare before the check that it has not run yet, so
    # a loaded machine's late wake-ups cannot let it run first.
    collections = TimedCollections(young_every_s=0.05, full_every_s=2.0)
    collections.start()
    try:
        node = _Node()
        await asyncio.sleep(0.3)  # lives through young collections: now in the oldest
        assert _in_oldest_generation(node)
        old = weakref.ref(node)
        del node
        await asyncio.sleep(0.3)
        assert old() is not None  # the young collections do not reach it
        await asyncio.sleep(2.0)
        assert old() is None
    finally:
        collections.stop()
