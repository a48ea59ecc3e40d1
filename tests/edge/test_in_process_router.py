"""Chat calls to a router in the edge's own process (edge/in_process_router.py): the edge's
RouterStreams against the router's CallStreams with no transport between them. Each call
gets its own answer, a cancelled call is cancelled at the router and no other, an edge that
goes away has its calls cancelled (metered as abandoned), a drain loses no call, and the
edge's RouterCalls answers exactly as over the call socket. Given the router's handlers, a
non-streamed call runs them in its own task: no stream, a hang-up answered 499 with the
task left uncancelled, a server's cancellation kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest
from starlette.requests import Request

from aig.router.v1 import router_pb2 as pb
from aig.router.v1 import router_pb2_grpc as pb_grpc
from aig_common.errors import APIError
from controldb.money import Admission
from devstack.processes import free_port
from edge.admission import Admissions
from edge.in_process_router import InProcessCalls
from edge.router_calls import RouterCalls, RouterLink
from edge.router_streams import RouterStreams
from edge.wire import HANG_UP_EXTENSION, HangUp
from tests.edge.test_router_streams import (
    Servicer,
    _answer,
    _ConnectedClient,
    _request,
    _streamed,
    _until,
)


@pytest.fixture
async def router() -> AsyncIterator[tuple[Servicer, InProcessCalls]]:
    servicer = Servicer(free_port())
    calls = InProcessCalls(servicer.call_streams, servicer)
    yield servicer, calls
    await calls.end(grace_s=None)


async def test_concurrent_calls_each_get_their_own_answer(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    servicer, calls = router
    streams = RouterStreams(calls.open_channel, width=2, calls_per_stream=8)
    answers: list[dict[str, object]] = []
    streamed: list[list[dict[str, object]]] = []
    for wave in range(4):  # in waves, so streams retire and their successors take over
        ids = range(wave * 10, wave * 10 + 10)
        answers += await asyncio.gather(
            *(_answer(streams, f"u{i}", delay=(i % 7) / 100) for i in ids)
        )
        streamed += await asyncio.gather(
            *(_streamed(streams, f"s{i}", delay=(i % 5) / 100, chunks=3) for i in ids)
        )
    assert [answer["request_id"] for answer in answers] == [f"u{i}" for i in range(40)]
    for i, chunks in enumerate(streamed):
        assert [(c["request_id"], c["index"]) for c in chunks] == [(f"s{i}", n) for n in range(3)]
    # Every retired stream was half-closed by the edge and ended by the router: only the
    # two open ones are still served.
    await _until(lambda: calls.streams_served == 2)
    streams.close()
    await _until(lambda: calls.streams_served == 0)
    assert not servicer.cancelled


async def test_a_cancelled_call_is_cancelled_at_the_router_and_no_other(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    servicer, calls = router
    streams = RouterStreams(calls.open_channel, width=1)
    slow = streams.chat(_request("leaves", delay=30))
    kept = asyncio.ensure_future(_answer(streams, "stays", delay=0.2))
    streamed = streams.stream_chat(_request("leaves-stream", delay=30))
    await _until(lambda: len(servicer.started) == 3)
    assert slow.cancel() and streamed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    with pytest.raises(asyncio.CancelledError):
        await streamed.__anext__()
    assert (await kept)["request_id"] == "stays"
    await _until(lambda: len(servicer.cancelled) == 2)
    streams.close()
    assert sorted(servicer.cancelled) == ["leaves", "leaves-stream"]
    assert servicer.finished == ["stays"]


async def test_an_edge_that_goes_away_has_its_calls_cancelled_at_the_router(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """The edge's shutdown after its grace: what is still in flight is cancelled, which the
    router meters as abandoned (router/server.py), rather than left running for no one."""
    servicer, calls = router
    streams = RouterStreams(calls.open_channel, width=2)
    pending = [asyncio.ensure_future(_answer(streams, f"p{i}", delay=30)) for i in range(4)]
    await _until(lambda: len(servicer.started) == 4)
    streams.close()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    await _until(lambda: len(servicer.cancelled) == 4)
    await _until(lambda: calls.streams_served == 0)
    assert not servicer.finished


async def test_a_draining_router_answers_every_call_and_its_streams_end(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """On the edge's shutdown the router drains: a call in flight finishes, a call sent after
    the drain began is still answered (there is no other router to send it to), and the
    streams end on their own, well within the grace."""
    servicer, calls = router
    streams = RouterStreams(calls.open_channel, width=2)
    await asyncio.gather(*(_answer(streams, f"warm{i}") for i in range(4)))
    slow = asyncio.ensure_future(_answer(streams, "slow", delay=0.5))
    await _until(lambda: "slow" in servicer.started)
    servicer.call_streams.drain()
    after = await asyncio.gather(*(_answer(streams, f"after{i}") for i in range(6)))
    assert (await slow)["request_id"] == "slow"
    assert [answer["request_id"] for answer in after] == [f"after{i}" for i in range(6)]
    await asyncio.wait_for(calls.end(grace_s=20), timeout=5)
    assert not servicer.cancelled
    streams.close()


class _ServedClient:
    """An ASGI request served by the edge's protocol (edge/wire.py): `signal.lost()` is the
    client leaving."""

    def __init__(self) -> None:
        self.signal = HangUp()
        self.scope = {"extensions": {HANG_UP_EXTENSION: {"signal": self.signal}}}


async def test_the_edge_answers_as_over_a_socket(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    servicer, calls = router
    streams = RouterStreams(calls.open_channel, width=1)
    router_calls = RouterCalls(cast(Admissions, None))
    router_calls.connect(RouterLink(cast(pb_grpc.RouterStub, None), streams))
    admission = cast(Admission, None)
    reply = await router_calls.complete(
        _request("one"), admission, cast(Request, _ConnectedClient())
    )
    opened = await router_calls.open_stream(_request("two", chunks=2), admission)
    rest = [event async for event in opened.rest]
    streams.close()
    assert orjson.loads(reply.completion)["request_id"] == "one"
    assert orjson.loads(opened.first.chunk)["index"] == 0
    assert [event.WhichOneof("event") for event in rest] == ["chunk", "end"]
    assert servicer.finished == ["one", "two"]


async def _inline_calls(servicer: Servicer, calls: InProcessCalls) -> RouterCalls:
    streams = RouterStreams(calls.open_channel, width=1)
    router_calls = RouterCalls(cast(Admissions, None))
    router_calls.connect(RouterLink(cast(pb_grpc.RouterStub, None), streams, servicer))
    return router_calls


async def test_an_inline_call_is_answered_in_the_requests_own_task(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """With the router's handlers given to the edge, a non-streamed call opens no stream:
    the handler runs in the task that awaits it; a streamed call still takes a stream."""
    servicer, calls = router
    router_calls = await _inline_calls(servicer, calls)
    client = cast(Request, _ServedClient())
    replies = [
        await router_calls.complete(_request(rid), cast(Admission, None), client)
        for rid in ("one", "two")
    ]
    assert [orjson.loads(reply.completion)["request_id"] for reply in replies] == ["one", "two"]
    assert calls.streams_served == 0
    opened = await router_calls.open_stream(_request("three"), cast(Admission, None))
    assert orjson.loads(opened.first.chunk)["request_id"] == "three"
    assert calls.streams_served == 1
    assert servicer.finished == ["one", "two", "three"]


async def test_an_inline_call_whose_client_leaves_is_cancelled_and_answered_499(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """The client's hang-up cancels the handler (the router meters it as abandoned); the
    request's task is left uncancelled, to answer 499 for the access log and metrics."""
    servicer, calls = router
    router_calls = await _inline_calls(servicer, calls)
    client = _ServedClient()

    async def call() -> tuple[APIError, int]:
        with pytest.raises(APIError) as raised:
            await router_calls.complete(
                _request("leaves", delay=30), cast(Admission, None), cast(Request, client)
            )
        task = asyncio.current_task()
        assert task is not None
        return raised.value, task.cancelling()

    running = asyncio.ensure_future(call())
    await _until(lambda: servicer.started == ["leaves"])
    client.signal.lost()
    error, cancelling = await running
    assert (error.status, error.code, cancelling) == (499, "client_closed", 0)
    assert servicer.cancelled == ["leaves"] and not servicer.finished


async def test_an_inline_call_cancelled_by_the_server_stays_cancelled(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """A cancellation that is not the client's (the server's shutdown) is not turned into a
    499: it goes on up, even if the client then leaves too."""
    servicer, calls = router
    router_calls = await _inline_calls(servicer, calls)
    client = _ServedClient()
    running = asyncio.ensure_future(
        router_calls.complete(
            _request("shut", delay=30), cast(Admission, None), cast(Request, client)
        )
    )
    await _until(lambda: servicer.started == ["shut"])
    running.cancel()
    client.signal.lost()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert servicer.cancelled == ["shut"]


async def test_an_inline_call_the_router_fails_on_is_answered_503(
    router: tuple[Servicer, InProcessCalls],
) -> None:
    """A fault the router's handler does not answer itself (a bug) reaches the client as the
    503 a failed router call gets over a socket, not as an unhandled 500."""
    servicer, calls = router

    async def broken(request: pb.ChatRequest, context: object) -> pb.ChatResponse:
        raise RuntimeError("a bug in the router")

    servicer.ChatCompletion = broken  # type: ignore[method-assign]
    router_calls = await _inline_calls(servicer, calls)
    with pytest.raises(APIError) as raised:
        await router_calls.complete(
            _request("faulty"), cast(Admission, None), cast(Request, _ServedClient())
        )
    assert (raised.value.status, raised.value.code) == (503, "router_unavailable")
