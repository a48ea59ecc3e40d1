"""The edge's HTTP/1.1 server protocol: uvicorn's httptools protocol, except that a request
the parser rejects (NUL or control characters in a header, a bare CR or LF, both
Content-Length and Transfer-Encoding, a broken request line) gets an OpenAI-shaped JSON 400
like every other bad input, not uvicorn's plain-text "Invalid HTTP request received.".

The parser gives up before any route is known, so the dialect cannot follow the path: the
body is the OpenAI one, which every client of the gateway can read. The connection is
closed afterwards, as uvicorn does, because the rest of the byte stream cannot be trusted.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aig_common.errors import APIError

MALFORMED_HTTP = APIError(
    400,
    "The request is not valid HTTP/1.1 (malformed request line, header or framing).",
    code="malformed_http",
)
_BODY = orjson.dumps(MALFORMED_HTTP.body())


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(_BODY)).encode("ascii") + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + _BODY)
        self.transport.close()
