"""The body deadline (edge/http.py `RequestLimits.receive_by_deadline`, `BodyDeadlines`): one
sweep for every request waiting for its body, instead of a timer per request."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from aig_common.errors import APIError
from edge.http import RequestLimits

BODY: Message = {"type": "http.request", "body": b"{}", "more_body": False}


async def _whole_body() -> Message:
    return BODY


async def _never() -> Message:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def test_a_body_in_time_leaves_nothing_behind_and_is_never_cancelled_later() -> None:
    """A request that has its body is forgotten at once: however long its handler then runs,
    the sweep does not cancel it, and with no request waiting no sweep stays armed."""
    limits = RequestLimits(max_header_bytes=4_000, body_timeout_s=0.1)

    async def request() -> str:
        assert await limits.receive_by_deadline(_whole_body)() == BODY
        await asyncio.sleep(0.3)  # the handler, well past the body deadline
        return "answered"

    assert await asyncio.gather(*(request() for _ in range(20))) == ["answered"] * 20
    deadlines = limits._deadlines
    assert deadlines._reading == {} and deadlines._late == set()
    await asyncio.sleep(0.05)  # the sweep armed by the first request has run and not rearmed
    assert deadlines._sweep is None


async def test_only_the_late_request_gets_408_and_within_its_sweep() -> None:
    limits = RequestLimits(max_header_bytes=4_000, body_timeout_s=0.2)

    async def late() -> int:
        try:
            await limits.receive_by_deadline(_never)()
        except APIError as error:
            # The sweep's cancellation was taken back: the task is not left cancelling.
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            return error.status
        raise AssertionError("no 408")

    async def on_time() -> Message:
        receive = limits.receive_by_deadline(_whole_body)
        await asyncio.sleep(0.05)
        return await receive()

    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes = await asyncio.gather(late(), on_time(), return_exceptions=True)
    waited = loop.time() - started
    assert outcomes == [408, BODY]
    # Not before the deadline (0.2 s); after it, one sweep interval (0.02 s) and scheduling.
    assert 0.2 <= waited < 2.0


async def test_a_request_cancelled_by_someone_else_is_cancelled_not_408() -> None:
    """A client gone or a shutdown cancels the task waiting for its body: that stays a
    cancellation, and its deadline is forgotten."""
    limits = RequestLimits(max_header_bytes=4_000, body_timeout_s=5)
    receive = limits.receive_by_deadline(_never)

    async def read() -> Message:
        return await receive()

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert limits._deadlines._reading == {}
