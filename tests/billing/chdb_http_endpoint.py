"""A test-only ClickHouse HTTP endpoint backed by chDB, so the clickhouse-connect backend
runs its real client code (HTTP, settings, init queries, formats) against the real
ClickHouse engine.

What this proves: our ClickHouseServerLedger's SQL, its use of clickhouse-connect and the
result parsing work against ClickHouse's SQL engine. What it does not prove: a ClickHouse
server's own HTTP layer (authentication, compression, sessions, cluster behaviour) — no
ClickHouse server package is installable on these machines.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from chdb import session

_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


@contextmanager
def chdb_http_server(data_dir: Path) -> Iterator[str]:
    engine = session.Session(str(data_dir))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _run(self) -> None:
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            sql = (params.get("query", "") + "\n" + body).strip()
            match = _FORMAT.search(sql)
            fmt = match.group(1) if match else params.get("default_format", "TabSeparated")
            if match:
                sql = sql[: match.start()].rstrip()
            try:
                with lock:
                    result = engine.query(sql, fmt)
                payload = bytes(result.bytes()) if result is not None else b""
            except Exception as exc:
                message = str(exc).encode()
                self.send_response(500)
                self.send_header("X-ClickHouse-Exception-Code", "1")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("X-ClickHouse-Format", fmt)
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Summary", "{}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _run
        do_POST = _run

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://default:@127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        engine.close()
