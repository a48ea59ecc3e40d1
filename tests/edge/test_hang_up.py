"""A client's hang-up (edge/wire.py `HangUp`): the connection's protocol runs the armed
callback the moment the connection is lost, with no task per call waiting on `receive()`.
Served by uvicorn with the edge's own protocol, on asyncio's loop and on uvloop (the
services run uvloop; its transports are a different implementation). The fallback for a
server without the extension (edge/router_calls.py `ReceivedHangUp`) is tested last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvicorn
import uvloop
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from edge.router_calls import ReceivedHangUp, hang_up_of
from edge.wire import HANG_UP_EXTENSION, HangUp, JsonErrorHttpToolsProtocol
from tests.edge.test_router_streams import _until

LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _signal_after_body(scope: Scope, receive: Receive, signals: list[HangUp]) -> HangUp:
    """The request's hang-up signal, once its body was read (as the edge arms it), noted in
    `signals`."""
    while (await receive()).get("more_body"):
        pass
    signal: HangUp = scope["extensions"][HANG_UP_EXTENSION]["signal"]
    signals.append(signal)
    return signal


async def _answer(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _served(app: App) -> AsyncIterator[int]:
    """`app` served by uvicorn with the edge's protocol on a free port of 127.0.0.1."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=JsonErrorHttpToolsProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), serving
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await serving


REQUEST = b"POST /call HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


async def _client_leaves_mid_call() -> tuple[list[str], bool]:
    armed, ran = asyncio.Event(), asyncio.Event()
    signals: list[HangUp] = []
    happened: list[str] = []

    def on_hang_up() -> None:
        happened.append("callback")
        ran.set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        signal = await _signal_after_body(scope, receive, signals)
        signal.arm(on_hang_up)
        armed.set()
        await asyncio.wait_for(ran.wait(), 10)

    async with _served(app) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await asyncio.wait_for(armed.wait(), 10)
        writer.close()
        await asyncio.wait_for(ran.wait(), 10)
    return happened, signals[0].happened


@LOOPS
def test_the_armed_callback_runs_when_the_client_leaves_mid_call(
    loop_factory: LoopFactory,
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        happened, signal_happened = runner.run(_client_leaves_mid_call())
    assert happened == ["callback"]
    assert signal_happened


async def _client_leaves_after_answers() -> tuple[list[HangUp], list[bool], list[str]]:
    """Two calls answered on one kept-alive connection, each armed and disarmed around its
    work, then the client closes: nothing armed is left to run."""
    signals: list[HangUp] = []
    seen_happened: list[bool] = []
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        signal = await _signal_after_body(scope, receive, signals)
        seen_happened.append(signal.happened)
        signal.arm(lambda: ran.append(scope["path"]))
        await asyncio.sleep(0)
        signal.disarm()
        await _answer(send)

    async with _served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert await reader.readexactly(2) == b"ok"
        writer.close()
        await _until(lambda: signals[0].happened)
    return signals, seen_happened, ran


@LOOPS
def test_a_disarmed_callback_never_runs_and_the_signal_is_the_connections(
    loop_factory: LoopFactory,
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        signals, seen_happened, ran = runner.run(_client_leaves_after_answers())
    assert len(signals) == 2 and signals[0] is signals[1]
    assert seen_happened == [False, False]
    assert ran == []


async def _client_gone_before_arming() -> list[str]:
    """The client leaves while the call is still being admitted: arming runs the callback at
    once, as the task watching `receive()` did when the disconnect was already queued."""
    ran: list[str] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        signal = await _signal_after_body(scope, receive, [])
        await _until(lambda: signal.happened)
        signal.arm(lambda: ran.append("at once"))
        done.set()

    async with _served(app) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 10)
    return ran


@LOOPS
def test_arming_after_the_client_left_runs_the_callback_at_once(
    loop_factory: LoopFactory,
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(_client_gone_before_arming()) == ["at once"]


def _request(receive: Receive, scope_extra: dict[str, object]) -> Request:
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": [], **scope_extra}
    return Request(scope, receive)


async def test_without_the_extension_the_hang_up_is_read_from_the_disconnect() -> None:
    disconnect = asyncio.Event()

    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    gone = hang_up_of(_request(receive, {}))
    assert isinstance(gone, ReceivedHangUp)
    ran: list[str] = []
    gone.arm(lambda: ran.append("cancelled"))
    await asyncio.sleep(0.01)
    assert ran == [] and not gone.happened
    disconnect.set()
    await _until(lambda: ran)
    assert ran == ["cancelled"] and gone.happened

    # Disarmed before the client leaves: its waiting task is gone with it.
    stays = hang_up_of(_request(receive, {}))
    disconnect.clear()
    stays.arm(lambda: ran.append("too late"))
    await asyncio.sleep(0.01)
    stays.disarm()
    disconnect.set()
    await asyncio.sleep(0.05)
    assert ran == ["cancelled"] and not stays.happened


async def test_with_the_extension_the_connections_signal_is_used() -> None:
    async def receive() -> Message:
        raise AssertionError("the connection's signal needs no receive()")

    signal = HangUp()
    request = _request(receive, {"extensions": {HANG_UP_EXTENSION: {"signal": signal}}})
    assert hang_up_of(request) is signal
