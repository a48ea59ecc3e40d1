"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol, with two changes.

A request the parser rejects (NUL or control characters in a header, a bare CR or LF, both
Content-Length and Transfer-Encoding, a broken request line) gets an OpenAI-shaped JSON 400
like every other bad input, not uvicorn's plain-text "Invalid HTTP request received.". The
parser gives up before any route is known, so the dialect cannot follow the path: the body
is the OpenAI one, which every client of the gateway can read. The connection is closed
afterwards, as uvicorn does, because the rest of the byte stream cannot be trusted.

Each request's scope carries the connection's `HangUp` (under `extensions`, the ASGI place
for a server's additions), so a call can be cancelled the moment the client goes without a
task per call waiting on `receive()` for the disconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aig_common.errors import APIError

MALFORMED_HTTP = APIError(
    400,
    "The request is not valid HTTP/1.1 (malformed request line, header or framing).",
    code="malformed_http",
)
_BODY = orjson.dumps(MALFORMED_HTTP.body())


# scope["extensions"]["aig.hang_up"]["signal"]: ASGI gives each extension a dict of its own.
HANG_UP_EXTENSION = "aig.hang_up"


class HangUp:
    """What to do if the client goes before its answer: one callback at a time, since a
    connection runs one request at a time (uvicorn holds pipelined ones back until the
    answer before them is complete)."""

    __slots__ = ("_callback", "happened")

    def __init__(self) -> None:
        self._callback: Callable[[], object] | None = None
        self.happened = False

    def arm(self, callback: Callable[[], object]) -> None:
        """Runs `callback` when the client goes, at once if it has gone already."""
        if self.happened:
            callback()
        else:
            self._callback = callback

    def disarm(self) -> None:
        self._callback = None

    def lost(self) -> None:
        self.happened = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.hang_up = HangUp()
        self._hang_up_extension: dict[object, object] = {"signal": self.hang_up}

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A dict per request, as the scope is: an app may add to its own.
        self.scope["extensions"] = {HANG_UP_EXTENSION: self._hang_up_extension}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.hang_up.lost()

    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + _BODY)
        self.transport.close()
