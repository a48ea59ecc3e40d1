"""Where the ledger's SQL runs: chDB in this process (default) or a ClickHouse server.

Both run the same statements from schema.py and queries.py and decode SELECT results
from the same format (JSONEachRow, 64-bit integers unquoted), so their answers are the
same Python values. They differ only in transport and in how a batch is encoded for
insertion: chDB parses JSONCompactColumns (one JSON array per column) inline with the
INSERT, clickhouse-connect sends its Native columnar format over HTTP (its efficient path,
typed by the table's own columns).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from .ledger import Param, SqlLedger, param_text
from .rows import COLUMNS, UsageRow, rows_as_json_columns
from .schema import TABLE

# Exact ints for UInt64/Int64 sums whatever the engine's default (older ones quote them).
OUTPUT_SETTINGS = {"output_format_json_quote_64bit_integers": 0}
# best_effort reads the RFC 3339 times orjson writes (see rows_as_json_columns); it is
# also what clickhouse-connect sets for its own inserts.
_INSERT_JSON_COLUMNS = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)})"
    " SETTINGS date_time_input_format = 'best_effort' FORMAT JSONCompactColumns\n"
)


class ChdbLedger(SqlLedger):
    """The ClickHouse engine inside this process, its data in a directory (under var/).

    chDB is synchronous and runs one engine per process: statements run one at a time in
    a worker thread, under a lock, so the event loop never waits for a merge or a scan.
    Only one ChdbLedger (one data directory) can be open in a process at a time.
    """

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._session = session.Session(str(path))
        self._lock = threading.Lock()
        for name, value in OUTPUT_SETTINGS.items():
            self._session.query(f"SET {name} = {value}")

    def _run(self, sql: str, fmt: str, params: dict[str, str] | None = None) -> bytes:
        with self._lock:
            result = self._session.query(sql, fmt, params=params)
        return bytes(result.bytes()) if result is not None else b""

    async def execute(self, sql: str) -> None:
        await asyncio.to_thread(self._run, sql, "TabSeparated")

    async def query(
        self, sql: str, params: Mapping[str, Param] | None = None
    ) -> list[dict[str, Any]]:
        # chDB, like the HTTP interface, parses parameter values in escaped text form.
        escaped = {name: _escape(param_text(value)) for name, value in (params or {}).items()}
        data = await asyncio.to_thread(self._run, sql, "JSONEachRow", escaped or None)
        return _decode_json_each_row(data)

    async def insert(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        # Data inline after FORMAT: no SQL literals to build, and no escaping beyond JSON's.
        body = rows_as_json_columns(rows).decode()
        await asyncio.to_thread(self._run, _INSERT_JSON_COLUMNS + body, "TabSeparated")

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._session.close()


class ClickHouseServerLedger(SqlLedger):
    """A ClickHouse server (or cluster endpoint) over HTTP with clickhouse-connect.

    `url` is a clickhouse-connect DSN, e.g. `http://user:password@clickhouse:8123/`.
    The client connects on first use (its handshake is network I/O) and uses no HTTP
    session, so statements from several tasks run in parallel on its connection pool.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> Any:
        if self._client is None:
            async with self._connecting:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._connect)
        return self._client

    def _connect(self) -> Any:
        import clickhouse_connect
        from clickhouse_connect.driver import options

        # clickhouse-connect imports pandas (installed as a chdb dependency) on its first
        # insert, only to check the data's type; a second or more that belongs here, at
        # connect, rather than in front of the first batch of usage.
        _ = options.pd
        # A session would serialize every statement server-side ("session is locked"),
        # and the ledger keeps no session state (no temporary tables, no SET).
        return clickhouse_connect.get_client(dsn=self._url, autogenerate_session_id=False)

    async def execute(self, sql: str) -> None:
        client = await self._connected()
        await asyncio.to_thread(client.command, sql)

    async def query(
        self, sql: str, params: Mapping[str, Param] | None = None
    ) -> list[dict[str, Any]]:
        client = await self._connected()
        texts = {name: param_text(value) for name, value in (params or {}).items()}
        data = await asyncio.to_thread(
            client.raw_query,
            sql,
            parameters=texts or None,
            settings=OUTPUT_SETTINGS,
            fmt="JSONEachRow",
        )
        return _decode_json_each_row(bytes(data))

    async def insert(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        client = await self._connected()
        await asyncio.to_thread(
            client.insert, TABLE, [row.as_tuple() for row in rows], column_names=list(COLUMNS)
        )

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "'": "\\'"})


def _escape(text: str) -> str:
    """ClickHouse's escaped text form, the one parameter values are parsed from."""
    return text.translate(_ESCAPES)


def _decode_json_each_row(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
