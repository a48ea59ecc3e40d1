"""aig_common.runtime: with the services' collector settings, a reference cycle made after
start-up waits for a collection that may not come for many minutes; `YoungCollections`
frees it within its interval, and stops when told."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from aig_common.runtime import YoungCollections, freeze_startup_heap


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


async def test_a_cycle_waits_for_the_collector_and_young_collections_free_it(
    services_collector: None,
) -> None:
    left_alone = _garbage_cycle()
    await asyncio.sleep(0.2)
    assert left_alone() is not None  # no collection came: the settings' cost

    collections = YoungCollections(interval_s=0.05)
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

    after_stop = _garbage_cycle()
    await asyncio.sleep(0.2)
    assert after_stop() is not None
    gc.collect()
    assert after_stop() is None
