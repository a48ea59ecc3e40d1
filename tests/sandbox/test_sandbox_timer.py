"""The sandbox's sleeps (`sandbox.timer`): never shorter than asked, on either event loop.

The benchmarks measure every gateway against the sandbox's fixed latency, so a sleep that
ends early, or late by an amount that depends on the traffic, moves every overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from bench.upstream_timer import lateness_us
from sandbox.timer import precise_sleep

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: dict[str, Runner] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


@pytest.mark.parametrize("loop_name", sorted(RUNNERS))
def test_a_sleep_on_a_busy_loop_lasts_its_whole_length(loop_name: str) -> None:
    # As a sandbox under load: other connections wake its loop every fraction of a
    # millisecond (the scenario bench/upstream_timer.py measures). uvloop's clock counts
    # whole milliseconds, so there most asyncio.sleep(0.005) calls end early.
    lateness = RUNNERS[loop_name](lateness_us(precise_sleep, sleeps=20, latency_s=0.005))
    assert min(lateness) >= 0, lateness


@pytest.mark.parametrize("loop_name", sorted(RUNNERS))
def test_sleeps_end_in_the_order_of_their_deadlines_whatever_order_they_began(
    loop_name: str,
) -> None:
    # One timer serves every sleep of a loop: a later sleep with an earlier deadline re-arms
    # it (else it would wait for the 200 ms one), and a cancelled sleep neither wakes early
    # nor keeps the others from waking.
    async def main() -> tuple[list[int], list[int], int, bool]:
        ended: list[int] = []
        woke_at: list[int] = []

        async def sleeper(milliseconds: int) -> None:
            started = time.monotonic_ns()
            await precise_sleep(milliseconds / 1000)
            woke_at.append(time.monotonic_ns())
            assert woke_at[-1] - started >= milliseconds * 1_000_000
            ended.append(milliseconds)

        async def started_in_turn(milliseconds: int) -> asyncio.Task[None]:
            task = asyncio.create_task(sleeper(milliseconds))
            await asyncio.sleep(0)  # let it arm the timer before the next begins
            return task

        longest_deadline = time.monotonic_ns() + 200_000_000
        tasks = [await started_in_turn(ms) for ms in (200, 12, 30, 4, 21)]
        cancelled = await started_in_turn(8)
        cancelled.cancel()
        await asyncio.gather(*tasks)
        return ended, woke_at, longest_deadline, cancelled.cancelled()

    ended, woke_at, longest_deadline, was_cancelled = RUNNERS[loop_name](main())
    assert ended == [4, 12, 21, 30, 200]
    assert all(woke < longest_deadline for woke in woke_at[:-1])
    assert was_cancelled


def test_every_event_loop_gets_a_timer_of_its_own() -> None:
    # The sandbox's tests run it on many loops in one process, one after the other.
    async def one() -> int:
        started = time.monotonic_ns()
        await precise_sleep(0.002)
        return time.monotonic_ns() - started

    for run in (asyncio.run, uvloop.run, asyncio.run):
        assert run(one()) >= 2_000_000


def test_a_loop_whose_sleep_was_cancelled_is_not_kept_alive() -> None:
    # The timers are kept per loop, weakly; a cancelled sleep's entry must not hold its loop
    # (through its future) once the loop is done with.
    loop = asyncio.new_event_loop()
    alive = weakref.ref(loop)

    async def main() -> None:
        sleeper = asyncio.create_task(precise_sleep(60))
        await asyncio.sleep(0)
        sleeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sleeper

    loop.run_until_complete(main())
    loop.close()
    del loop
    gc.collect()
    assert alive() is None
