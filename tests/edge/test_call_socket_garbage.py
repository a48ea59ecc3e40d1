"""A call socket connection, once rotated out and closed, is freed on both sides by
reference counting alone.

Our services run the cycle collector rarely (aig_common.runtime: young collections every
50,000 net allocations, on a heap frozen after start-up, plus timed ones), so an object in a
reference cycle outlives its use. Before the timed collections it lived for many minutes:
the edge rotates its call socket connections every 64 calls, a cycle per connection kept
every connection ever opened, and the router's RSS grew 0.11 MiB a minute at 100 calls/s
over a 30-minute soak. Checked on asyncio's loop and on uvloop, which the
services run and whose transports are a different implementation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator

import pytest
import uvloop

from edge.call_socket import CallSockets, SocketCallChannel
from edge.in_process_router import InProcessCallChannel, InProcessCalls
from edge.router_streams import RouterStreams
from tests.edge.test_router_streams import Router, Routers, _answer, _until

OUR_PACKAGES = ("edge.", "router.", "aig_common.")
CALLS = 20
CALLS_PER_CONNECTION = 2


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector stopped, and what it finds later kept in gc.garbage to be looked at."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


class _CountingSockets(CallSockets):
    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.opened = 0

    def open(self) -> SocketCallChannel:
        self.opened += 1
        return super().open()


async def _rotate_connections() -> tuple[int, Router]:
    """Calls enough to rotate the edge's connection several times, then ends everything;
    returns how many connections the edge opened, and the router, which the caller keeps
    (the router is made once per process; what is looked for is made per connection)."""
    routers = Routers("socket")
    router = await routers.start()
    sockets = _CountingSockets(f"127.0.0.1:{router.call_socket.port}")
    streams = RouterStreams(sockets.open, width=1, calls_per_stream=CALLS_PER_CONNECTION)
    try:
        for index in range(CALLS):
            assert (await _answer(streams, f"call-{index}"))["request_id"] == f"call-{index}"
        streams.close()
        # The router closes each connection once the edge has ended it and it has answered.
        await _until(lambda: len(router.call_socket.serving) == 0)
    finally:
        await router.stop()
    await asyncio.sleep(0.05)  # the edge's sides see the close
    return sockets.opened, router


def _our_garbage() -> list[str]:
    """The types of ours that a full collection finds only in cycles (kept in gc.garbage)."""
    gc.collect()
    return sorted(
        {
            f"{type(found).__module__}.{type(found).__qualname__}"
            for found in gc.garbage
            if type(found).__module__.startswith(OUR_PACKAGES)
        }
    )


@pytest.mark.parametrize(
    "loop_factory",
    [asyncio.new_event_loop, uvloop.new_event_loop],
    ids=["asyncio", "uvloop"],
)
def test_rotated_connections_leave_no_cycle_of_ours(
    collector_off: None, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        opened, router = runner.run(_rotate_connections())
    assert opened >= CALLS // CALLS_PER_CONNECTION
    assert _our_garbage() == []
    assert router.call_socket.streams is not None  # kept until here


async def _rotate_in_process_streams() -> tuple[int, InProcessCalls, Router]:
    """The same rotation with the router in the edge's process (edge/in_process_router.py),
    where no socket closes: what ends a stream is the edge's end and the router's finish."""
    router = await Routers("socket").start()
    calls = InProcessCalls(router.servicer.call_streams, router.servicer)
    opened = 0

    def open_channel() -> InProcessCallChannel:
        nonlocal opened
        opened += 1
        return calls.open_channel()

    streams = RouterStreams(open_channel, width=1, calls_per_stream=CALLS_PER_CONNECTION)
    try:
        for index in range(CALLS):
            assert (await _answer(streams, f"call-{index}"))["request_id"] == f"call-{index}"
        streams.close()
        await _until(lambda: calls.streams_served == 0)
    finally:
        await router.stop()
    return opened, calls, router


@pytest.mark.parametrize(
    "loop_factory",
    [asyncio.new_event_loop, uvloop.new_event_loop],
    ids=["asyncio", "uvloop"],
)
def test_rotated_in_process_streams_leave_no_cycle_of_ours(
    collector_off: None, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        opened, calls, router = runner.run(_rotate_in_process_streams())
    assert opened >= CALLS // CALLS_PER_CONNECTION
    assert _our_garbage() == []
    assert calls.streams_served == 0 and router.call_socket.streams  # kept until here
