"""A test-only ClickHouse HTTP endpoint backed by chDB (the ClickHouse engine, in-process).

No ClickHouse server can be installed on these machines (no Debian package, nothing on
PyPI that ships one), so ClickHouseServerLedger's clickhouse-connect client talks to this
instead: a small HTTP server that implements the part of ClickHouse's HTTP interface that
clickhouse-connect uses, and hands every statement to chDB.

What this proves:
- clickhouse-connect's real client code runs end to end: its connection handshake (server
  version, timezone and settings queries), server-side parameter binding (`param_*`), the
  settings it sends, and its Native columnar insert encoding (lz4-compressed as it sends
  it by default), decoded by ClickHouse's own Native reader and type-checked against our
  table's columns (UUID, DateTime64, Enum8, LowCardinality, Bool, Int64, UInt64).
- Our SQL, our parameter formatting and our result decoding agree with ClickHouse's engine
  on that path, and give the same answers as the embedded backend.

What this does not prove: the ClickHouse server's own HTTP layer (authentication, quotas,
HTTP sessions, response compression, progress headers, its exact error statuses) and
anything about clusters (replication, distributed tables, ON CLUSTER). Settings sent as
URL parameters are applied with SET to the one chDB session, so they persist between
requests here, unlike on a server.
"""

from __future__ import annotations

import gzip
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import lz4.frame
from chdb import session

_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# An INSERT whose data follows the statement in the same request (one line break after
# the format name), as clickhouse-connect sends its Native blocks.
_INSERT_WITH_DATA = re.compile(
    rb"^\s*(INSERT\s+INTO\s+[\w.`]+\s*(?:\([^)]*\))?)\s*FORMAT\s+(\w+)[ \t]*\r?\n?",
    re.IGNORECASE | re.DOTALL,
)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
# URL parameters of the HTTP interface that are not query-level settings.
_TRANSPORT = {
    "query",
    "database",
    "default_format",
    "session_id",
    "session_timeout",
    "session_check",
    "user",
    "password",
    "quota_key",
    "query_id",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "role",
    "stacktrace",
}


@dataclass
class RequestLog:
    """What the client sent, so tests can check which code path they exercised."""

    statements: list[str] = field(default_factory=list)
    insert_formats: list[str] = field(default_factory=list)
    content_encodings: list[str] = field(default_factory=list)
    bound_params: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ChdbHttpServer:
    url: str
    log: RequestLog


@contextmanager
def chdb_http_server(data_dir: Path) -> Iterator[ChdbHttpServer]:
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = session.Session(str(data_dir))
    lock = threading.Lock()
    log = RequestLog()
    uploads = Path(tempfile.mkdtemp(prefix="insert-", dir=data_dir))

    def run(sql: str, fmt: str, params: dict[str, str], settings: dict[str, str]) -> bytes:
        with lock:
            for name, value in settings.items():
                escaped = value.replace("\\", "\\\\").replace("'", "\\'")
                engine.query(f"SET {name} = '{escaped}'")
            result = engine.query(sql, fmt, params=params or None)
        return bytes(result.bytes()) if result is not None else b""

    def insert_data(statement: str, fmt: str, data: bytes) -> None:
        # chDB takes no request body, but reads a file in any input format: the body
        # goes through ClickHouse's own reader for `fmt`, as on a server.
        with tempfile.NamedTemporaryFile(dir=uploads) as upload:
            upload.write(data)
            upload.flush()
            with lock:
                engine.query(f"{statement} SELECT * FROM file('{upload.name}', {fmt})")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            url_params = dict(parse_qsl(urlparse(self.path).query, keep_blank_values=True))
            body = self._read_body()
            encoding = self.headers.get("content-encoding", "")
            if encoding:
                log.content_encodings.append(encoding)
                body = _decompress(body, encoding)
            params = {k[6:]: v for k, v in url_params.items() if k.startswith("param_")}
            settings = {
                k: v
                for k, v in url_params.items()
                if k not in _TRANSPORT and not k.startswith("param_")
            }
            if params:
                log.bound_params.append(params)
            # Like the server: the `query` parameter, a line break, then the body.
            request = b"\n".join(
                part for part in (url_params.get("query", "").encode(), body) if part
            )
            try:
                insert = _INSERT_WITH_DATA.match(request)
                if insert:
                    statement, fmt = insert.group(1).decode(), insert.group(2).decode()
                    log.statements.append(statement)
                    log.insert_formats.append(fmt)
                    insert_data(statement, fmt, request[insert.end() :])
                    payload, fmt = b"", "TabSeparated"
                else:
                    sql = request.decode().strip()
                    match = _TRAILING_FORMAT.search(sql)
                    fmt = match.group(1) if match else url_params.get("default_format", "")
                    fmt = fmt or "TabSeparated"
                    if match:
                        sql = sql[: match.start()].rstrip()
                    log.statements.append(sql)
                    payload = run(sql, fmt, params, settings)
            except Exception as exc:
                self._reply(500, str(exc).encode(), {"X-ClickHouse-Exception-Code": _code(exc)})
                return
            self._reply(
                200,
                payload,
                {
                    "Content-Type": "application/octet-stream",
                    "X-ClickHouse-Format": fmt,
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Summary": "{}",
                },
            )

        def _read_body(self) -> bytes:
            # clickhouse-connect streams inserts with chunked transfer encoding.
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits for the loop to notice it.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield ChdbHttpServer(f"http://default:@127.0.0.1:{server.server_address[1]}/", log)
    finally:
        server.shutdown()
        server.server_close()
        with lock:
            engine.close()


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "lz4":
        return bytes(lz4.frame.decompress(body))
    if encoding == "gzip":
        return gzip.decompress(body)
    raise ValueError(f"unsupported content-encoding {encoding!r}")


def _code(exc: Exception) -> str:
    match = _ERROR_CODE.search(str(exc))
    return match.group(1) if match else "1001"
