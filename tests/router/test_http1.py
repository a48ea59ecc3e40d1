"""router.http1 against scripted HTTP/1.1 servers on 127.0.0.1: framing, keep-alive reuse,
timeouts, broken connections and cancellation, on both event loops the router may run on
(uvloop in production, asyncio's own in tests)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from sandbox_server import self_signed_certificate

from router.http1 import (
    ConnectionClosed,
    Http1Client,
    MalformedResponse,
    RequestTarget,
    encode_headers,
)

# What the server does with one request: writes, pauses, closes.
Step = bytes | float | None  # bytes: write; float: sleep that long; None: close the socket


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int  # which accepted connection (0, 1, ...) it came on


@dataclass
class ScriptedServer:
    """Answers the n-th request with `scripts[n]` (the last script repeats)."""

    scripts: list[list[Step]]
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, path: str = "/v1/chat") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                script = self.scripts[min(len(self.requests), len(self.scripts) - 1)]
                self.requests.append(Request(head, body, number))
                for step in script:
                    if step is None:
                        writer.close()
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n".encode()
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run_on_loop(coroutine: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(coroutine, 20))

    return run_on_loop


def client(read_timeout_s: float = 5.0) -> Http1Client:
    return Http1Client(connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


HEADERS = (("authorization", "Bearer sk-test"), ("content-type", "application/json"))


def test_sends_one_request_and_reuses_the_connection(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[sized(b'{"ok":1}', extra=b"X-Request-Id: r1\r\n")]]) as server:
            http = client()
            target = RequestTarget.post(server.url("/v1/chat?beta=true"), HEADERS)
            for _ in range(3):
                response = await http.post(target, b'{"a":1}', {"anthropic-beta": "b1"})
                assert response.status == 200
                assert response.headers["x-request-id"] == "r1"  # names come lower-cased
                assert await response.read() == b'{"ok":1}'
            assert server.connections == 1
            head = server.requests[0].head.decode()
            assert head.startswith("POST /v1/chat?beta=true HTTP/1.1\r\n")
            assert f"host: 127.0.0.1:{server.port}\r\n" in head
            assert "authorization: Bearer sk-test\r\n" in head
            assert "anthropic-beta: b1\r\n" in head
            assert "content-length: 7\r\n" in head
            assert server.requests[0].body == b'{"a":1}'
            http.close()

    run(scenario())


def test_chunks_arrive_as_the_server_sends_them(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        script: list[Step] = [CHUNKED_HEAD, chunk(b"data: 1\n\n"), 0.3, chunk(b"data: 2\n\n")]
        script.append(chunk(b""))
        async with ScriptedServer([script]) as server:
            http = client()
            response = await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            received = []
            loop = asyncio.get_running_loop()
            started = loop.time()
            async for piece in response.chunks():
                received.append((piece, loop.time() - started))
            # The first event came before the server's pause, not with the second.
            assert [piece for piece, _ in received] == [b"data: 1\n\n", b"data: 2\n\n"]
            assert received[0][1] < 0.25 <= received[1][1]
            response.close()
            second = await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            assert await second.read() == b"data: 1\n\ndata: 2\n\n"
            assert server.connections == 1  # a stream read to its end keeps its connection
            http.close()

    run(scenario())


def test_a_body_without_length_runs_to_the_connection_end(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        script: list[Step] = [b"HTTP/1.1 200 OK\r\n\r\n", b"part one, ", 0.05, b"part two", None]
        async with ScriptedServer([script]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            response = await http.post(target, b"{}")
            assert await response.read() == b"part one, part two"
            await http.post(target, b"{}")
            assert server.connections == 2  # that connection ended: the next call opened one
            http.close()

    run(scenario())


def test_connection_close_is_honoured(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        answer = sized(b"{}", extra=b"connection: close\r\n")
        async with ScriptedServer([[answer]]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            for _ in range(2):
                response = await http.post(target, b"{}")
                assert await response.read() == b"{}"
            assert server.connections == 2
            http.close()

    run(scenario())


def test_a_gzipped_body_is_decoded(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        payload = b'{"choices":[]}' * 50
        answer = sized(gzip.compress(payload), extra=b"content-encoding: gzip\r\n")
        async with ScriptedServer([[answer]]) as server:
            http = client()
            response = await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            assert await response.read() == payload
            assert b"accept-encoding" not in server.requests[0].head.lower()
            http.close()

    run(scenario())


def test_an_interim_100_continue_is_skipped(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        answer = b"HTTP/1.1 100 Continue\r\n\r\n" + sized(b"{}", status="201 Created")
        async with ScriptedServer([[answer]]) as server:
            http = client()
            response = await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            assert response.status == 201
            assert await response.read() == b"{}"
            http.close()

    run(scenario())


def test_a_silent_server_times_out_between_bytes(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        # Headers at once, then 0.15 s between body bytes: slower than nothing, but never
        # silent for the 0.3 s the read timeout allows, so it must not time out...
        trickle: list[Step] = [CHUNKED_HEAD]
        for _ in range(4):
            trickle += [0.15, chunk(b"x")]
        trickle += [chunk(b"")]
        # ...while this one goes silent after its headers.
        silent: list[Step] = [CHUNKED_HEAD, chunk(b"x"), 5.0]
        async with ScriptedServer([trickle, silent]) as server:
            http = client(read_timeout_s=0.3)
            target = RequestTarget.post(server.url(), HEADERS)
            response = await http.post(target, b"{}")
            assert await response.read() == b"xxxx"
            response = await http.post(target, b"{}")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await response.read()
            assert 0.25 < loop.time() - started < 2.0
            http.close()

    run(scenario())


def test_no_answer_at_all_times_out(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[5.0]]) as server:
            http = client(read_timeout_s=0.2)
            with pytest.raises(TimeoutError):
                await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            http.close()

    run(scenario())


def test_a_refused_connection_raises_oserror(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[b""]]) as server:
            url = server.url()
        http = client()
        with pytest.raises(OSError):
            await http.post(RequestTarget.post(url, HEADERS), b"{}")
        http.close()

    run(scenario())


def test_a_connection_closed_mid_body_fails_the_read(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"only part"
        async with ScriptedServer([[cut, None]]) as server:
            http = client()
            response = await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            with pytest.raises(ConnectionClosed):
                await response.read()
            http.close()

    run(scenario())


def test_a_connection_closed_before_any_answer_fails_the_call(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[None]]) as server:
            http = client()
            with pytest.raises(ConnectionClosed):
                await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            http.close()

    run(scenario())


def test_garbage_is_a_malformed_response(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[b"SMTP READY\r\n\r\n"]]) as server:
            http = client()
            with pytest.raises(MalformedResponse):
                await http.post(RequestTarget.post(server.url(), HEADERS), b"{}")
            http.close()

    run(scenario())


def test_an_unread_or_cancelled_response_closes_its_connection(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        slow: list[Step] = [CHUNKED_HEAD, chunk(b"first"), 5.0, chunk(b"late"), chunk(b"")]
        async with ScriptedServer([slow, slow, [sized(b"{}")]]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            # Left after its first chunk (the client went away): closed, not pooled.
            response = await http.post(target, b"{}")
            async for _ in response.chunks():
                break
            response.close()
            # Cancelled while waiting for more of the body.
            response = await http.post(target, b"{}")
            reading = asyncio.create_task(response.read())
            await asyncio.sleep(0.1)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            response = await http.post(target, b"{}")
            assert await response.read() == b"{}"
            # Neither connection was pooled: each call came on a connection of its own.
            assert [request.connection for request in server.requests] == [0, 1, 2]
            http.close()

    run(scenario())


def test_a_pooled_connection_the_server_closed_is_not_reused(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        # The server answers with a sized body and closes the socket right after, without
        # saying so in a header: the next call must notice and connect again.
        async with ScriptedServer([[sized(b"{}"), 0.05, None]]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            response = await http.post(target, b"{}")
            assert await response.read() == b"{}"
            await asyncio.sleep(0.2)
            response = await http.post(target, b"{}")
            assert await response.read() == b"{}"
            assert server.connections == 2
            http.close()

    run(scenario())


def test_line_breaks_in_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_headers([("x-beta", "a\r\nx-injected: 1")])
    with pytest.raises(ValueError, match="line break"):
        RequestTarget.post("http://127.0.0.1:1/v1", [("authorization", "Bearer a\nb")])
    assert encode_headers([("a", "b")]) == b"a: b\r\n"


def test_targets_name_the_origin_and_the_default_port() -> None:
    secure = RequestTarget.post("https://api.example.com/v1/chat/completions", [])
    assert (secure.origin.scheme, secure.origin.host, secure.origin.port) == (
        "https",
        "api.example.com",
        443,
    )
    assert secure.head == b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.example.com\r\n"
    assert RequestTarget.post("http://[::1]:8080/x", []).head.endswith(b"host: [::1]:8080\r\n")
    with pytest.raises(ValueError):
        RequestTarget.post("ftp://example.com/x", [])


def test_https_checks_the_certificate_and_keeps_the_connection(
    run: Callable[..., None], tmp_path: Path
) -> None:
    certfile, keyfile = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certfile, keyfile)
    trusting = ssl.create_default_context(cafile=str(certfile))

    async def scenario() -> None:
        async with ScriptedServer([[sized(b'{"ok":1}')]], tls=server_tls) as server:
            target = RequestTarget.post(server.url(), HEADERS)
            assert target.origin.scheme == "https"
            http = Http1Client(connect_timeout_s=2, read_timeout_s=5, ssl_context=trusting)
            for _ in range(2):
                response = await http.post(target, b"{}")
                assert await response.read() == b'{"ok":1}'
            assert server.connections == 1
            http.close()
            # The system's trust store does not know this certificate: no exchange at all.
            untrusting = client()
            with pytest.raises(ssl.SSLCertVerificationError):
                await untrusting.post(target, b"{}")
            untrusting.close()
            assert len(server.requests) == 2

    run(scenario())


def test_the_pool_holds_only_what_is_open(run: Callable[..., None]) -> None:
    """Many calls, a third of them left mid-body and a third cancelled: afterwards every
    connection the client still counts is idle in the pool and open, and there are no more
    of them than calls ran at once."""

    async def scenario() -> None:
        script: list[Step] = [CHUNKED_HEAD, chunk(b"a"), 0.01, chunk(b"b"), chunk(b"")]
        async with ScriptedServer([script]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)

            async def one(number: int) -> None:
                response = await http.post(target, b"{}")
                if number % 3 == 0:
                    assert await response.read() == b"ab"
                elif number % 3 == 1:
                    async for _ in response.chunks():
                        break
                    response.close()
                else:
                    reading = asyncio.create_task(response.read())
                    await asyncio.sleep(0)
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading

            for _ in range(10):
                await asyncio.gather(*(one(number) for number in range(30)))
            (pool,) = http._pools.values()
            await asyncio.sleep(0.05)
            assert pool._open == {c for c in pool._idle if not c.closed}
            assert 0 < len(pool._open) <= 30
            assert server.connections > 10  # the abandoned ones were not reused
            http.close()
            assert not pool._open

    run(scenario())


def test_bytes_after_a_response_retire_its_connection(run: Callable[..., None]) -> None:
    """A server that sends more than the response it owed (a second response nobody asked
    for, in the same write): the next call must not read those bytes as its answer."""

    async def scenario() -> None:
        unasked = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nunasked"
        async with ScriptedServer([[sized(b"first") + unasked], [sized(b"second")]]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            response = await http.post(target, b"{}")
            assert await response.read() == b"first"
            response = await http.post(target, b"{}")
            assert await response.read() == b"second"
            assert server.connections == 2
            http.close()

    run(scenario())


def test_a_refused_header_takes_no_connection(run: Callable[..., None]) -> None:
    async def scenario() -> None:
        async with ScriptedServer([[sized(b"{}")]]) as server:
            http = client()
            target = RequestTarget.post(server.url(), HEADERS)
            with pytest.raises(ValueError, match="line break"):
                await http.post(target, b"{}", {"anthropic-beta": "a\r\nx-injected: 1"})
            assert server.connections == 0
            assert all(not pool._open for pool in http._pools.values())
            http.close()

    run(scenario())
