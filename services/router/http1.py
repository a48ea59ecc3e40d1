"""The router's HTTP/1.1 client for upstream API calls: keep-alive connections per origin,
each an asyncio Protocol whose responses httptools parses (llhttp, the parser uvicorn uses).

Why not aiohttp: the upstream call was the largest single cost in the router's CPU (a fifth
of an edge running the router in its process, by py-spy), and nearly all of it was the
client's generality: request and response objects, header multidicts, payload writers,
timer contexts, cookie handling. Here a request is one pre-encoded head plus the body, one
write, and a parser callback per header; `python -m bench.http_clients` measures both
against the sandbox in one run (bench/EXTRAS.md).

What it does, because upstream APIs need it: POST with a bytes body; http and https (the
system's trust store); chunked, sized and close-delimited responses; gzip and deflate
bodies if a server sends them unasked (no Accept-Encoding is sent, so providers answer
uncompressed); a connect timeout and a read timeout between bytes; cancellation at any
point (the connection is closed, never reused mid-response). What it does not, because no
upstream API call needs it: redirects, cookies, proxies, HTTP/2, Expect: 100-continue.

A response is read fully or its connection is closed: a connection goes back to the pool
only after its response ended and the server did not ask to close it.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

# A pooled connection unused this long is closed rather than reused: servers drop idle
# keep-alive connections after 5-120 s, and a request written to one the server is closing
# fails. aiohttp's default, which the router used before.
IDLE_TIMEOUT_S = 15.0
# Open connections per origin, as aiohttp's connector limit was; a call beyond it waits.
MAX_CONNECTIONS = 1024


class UpstreamConnectionError(Exception):
    """The exchange failed below HTTP: the connection closed, or the response was not
    valid HTTP/1.1. (A refused connect is the OSError itself; a silent server TimeoutError.)"""


class ConnectionClosed(UpstreamConnectionError):
    def __init__(self) -> None:
        super().__init__("the server closed the connection before the response was complete")


class MalformedResponse(UpstreamConnectionError):
    pass


class _UnaskedBytes(Exception):
    """Raised inside the parser to stop it at a message nobody asked for."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """Where a request goes and its head up to the per-request headers, encoded once."""

    origin: Origin
    head: bytes

    @classmethod
    def post(cls, url: str, headers: Iterable[tuple[str, str]]) -> RequestTarget:
        """`url` is absolute and already encoded (paths are built by provider types);
        `headers` go with every request to it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        authority = f"[{host}]" if ":" in host else host
        if port != default_port:
            authority = f"{authority}:{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii")
        return cls(Origin(parts.scheme, host, port), head + encode_headers(headers))


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """`name: value` lines; a CR, LF or NUL in either would split or end the head."""
    lines = []
    for name, value in headers:
        line = f"{name}: {value}\r\n"
        if "\n" in line[:-1] or "\r" in line[:-2] or "\x00" in line:
            raise ValueError(f"header {name!r} holds a line break or NUL")
        lines.append(line)
    return "".join(lines).encode("latin-1")


class Response:
    """One response: status and headers once the head is in; the body as it arrives."""

    __slots__ = ("_connection", "_ended", "headers", "status")

    def __init__(self, connection: _Connection, status: int, headers: dict[str, str]) -> None:
        self._connection = connection
        self._ended = False  # the connection was released or closed: no longer ours
        self.status = status
        # Lower-case names; a repeated header keeps its last value.
        self.headers = headers

    async def read(self) -> bytes:
        """The whole body; then the connection goes back to the pool."""
        connection = self._connection
        try:
            while not connection.complete:
                await connection.wait_for_body()
        except BaseException:
            self._end(keep=False)
            raise
        body = connection.take_body()
        self._end(keep=True)
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, never held back to fill a buffer."""
        connection = self._connection
        while True:
            if connection.buffered:
                yield connection.take_body()
            elif connection.complete:
                return
            else:
                await connection.wait_for_body()

    def close(self) -> None:
        """Ends the exchange: a response read to its end keeps its connection for reuse,
        one that was not closes it (the server may still be producing)."""
        connection = self._connection
        self._end(keep=connection.complete and not connection.buffered)

    def _end(self, *, keep: bool) -> None:
        if self._ended:
            return
        self._ended = True
        if keep:
            self._connection.release()
        else:
            self._connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: _OriginPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._read_timeout_s = 0.0
        self._last_read = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._head_waiter: asyncio.Future[Response] | None = None
        self._body_waiter: asyncio.Future[None] | None = None
        self._header_list: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._decoder: Any = None  # a zlib decompressor, for a compressed body
        self._framed = False  # the response declared its length or is chunked
        self._error: BaseException | None = None
        self._exchanging = False  # a request was written and its response has not ended
        self._keep_alive = False
        self.complete = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._exchanging:
            # Bytes no request asked for, on an idle connection: where the next response
            # would begin can no longer be trusted, so it is not pooled for a call to misread.
            self._close_transport()
            return
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._exchanging:
                self._fail(MalformedResponse("the response could not be read"))
            else:
                self._close_transport()  # on_message_begin stopped it at unasked bytes
        except httptools.HttpParserUpgrade:
            self._fail(MalformedResponse("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(f"invalid HTTP/1.1 response ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._exchanging:
            return  # idle, or its response ended: the pool skips a closed connection
        if self._head_waiter is None and not self._framed and self._error is None:
            # No Content-Length and not chunked: the body ran to the connection's end.
            self._message_complete(keep_alive=False)
            return
        self._fail(ConnectionClosed())

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._exchanging:
            # Another message right behind the one asked for: stop parsing here, before its
            # bytes reach the finished response's body.
            raise _UnaskedBytes
        self._header_list = []
        self._chunks = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self._header_list
        }
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim response; the real one follows
        self._framed = "content-length" in headers or "chunked" in headers.get(
            "transfer-encoding", ""
        )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            # wbits 47: gzip or zlib framing, whichever the header comes with.
            self._decoder = zlib.decompressobj(47)
        elif encoding not in ("identity", ""):
            self._fail(MalformedResponse(f"unsupported content-encoding {encoding!r}"))
            return
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self, status, headers))

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(MalformedResponse(f"undecodable compressed body ({exc})"))
                return
        if body:
            self._chunks.append(body)
            self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            return
        self._message_complete(keep_alive=self._parser.should_keep_alive())

    # -- the exchange ------------------------------------------------------------------------

    def start(self, head: bytes, body: bytes, read_timeout_s: float) -> asyncio.Future[Response]:
        """Writes the request; the future resolves with the response once its head is in."""
        assert self._transport is not None
        self._exchanging = True
        self.complete = False
        self._framed = False
        self._decoder = None
        self._error = None
        self._read_timeout_s = read_timeout_s
        self._head_waiter = waiter = self._loop.create_future()
        self._transport.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        self._last_read = self._loop.time()
        self._watchdog = self._loop.call_at(self._last_read + read_timeout_s, self._check_idle)
        return waiter

    @property
    def buffered(self) -> bool:
        return bool(self._chunks)

    def take_body(self) -> bytes:
        chunks, self._chunks = self._chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def wait_for_body(self) -> None:
        if self._error is not None:
            raise self._error
        self._body_waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._body_waiter = None

    def release(self) -> None:
        """The exchange is over and the response complete: back to the pool, or closed if
        the server asked for that."""
        if self._keep_alive and not self.closed:
            self._pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self._stop_watchdog()
        self._close_transport()
        self._pool.forget(self)

    # -- internals ---------------------------------------------------------------------------

    def _message_complete(self, keep_alive: bool) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self._keep_alive = keep_alive
        self._exchanging = False
        self.complete = True
        self._stop_watchdog()
        self._wake()

    def _wake(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._exchanging = False
        self._stop_watchdog()
        for waiter in (self._head_waiter, self._body_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        self._head_waiter = None
        self._close_transport()

    def _close_transport(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    def _check_idle(self) -> None:
        deadline = self._last_read + self._read_timeout_s
        if self._loop.time() >= deadline:
            self._watchdog = None
            self._fail(TimeoutError())
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_idle)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


class _OriginPool:
    def __init__(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.origin = origin
        self.loop = loop
        self._ssl = ssl_context
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open: set[_Connection] = set()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def acquire(self, connect_timeout_s: float) -> _Connection:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely stale
            if not connection.closed and now - connection.idle_since < IDLE_TIMEOUT_S:
                return connection
            connection.close()
        await self._slots.acquire()
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl is not None else None,
                )
        except BaseException:
            self._slots.release()
            raise
        self._open.add(connection)
        return connection

    def put_back(self, connection: _Connection) -> None:
        connection.idle_since = now = self.loop.time()
        self._idle.append(connection)
        # The oldest idle connections are at the left: close those past their time.
        while self._idle and (
            self._idle[0].closed or now - self._idle[0].idle_since >= IDLE_TIMEOUT_S
        ):
            self._idle.popleft().close()

    def forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self._slots.release()

    def close(self) -> None:
        for connection in [*self._open]:
            connection.close()
        self._idle.clear()


class Http1Client:
    """Keep-alive pools per origin, for one event loop (create it on the loop it serves)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` decides which certificates https origins may present: by default
        the system's trust store, with the host name checked."""
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._pools: dict[Origin, _OriginPool] = {}
        self._ssl = ssl_context

    async def post(
        self,
        target: RequestTarget,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        read_timeout_s: float | None = None,
    ) -> Response:
        """Sends the request and returns once the response's head is in. The caller reads
        the body (`read` or `chunks`) or `close`s the response; a cancelled or failed call
        closes its connection itself."""
        # Encoded before a connection is taken: a refused header must not strand one.
        head = target.head + encode_headers(headers.items()) if headers else target.head
        connection = await self._pool(target.origin).acquire(self._connect_timeout_s)
        try:
            return await connection.start(head, body, read_timeout_s or self._read_timeout_s)
        except BaseException:
            connection.close()
            raise

    def _pool(self, origin: Origin) -> _OriginPool:
        pool = self._pools.get(origin)
        if pool is None:
            context = None
            if origin.scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                context = self._ssl
            pool = self._pools[origin] = _OriginPool(origin, asyncio.get_running_loop(), context)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
