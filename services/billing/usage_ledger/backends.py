"""Where the ledger's SQL runs: chDB in-process (default) or a ClickHouse server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from .ledger import Ledger, parse_json_each_row


class ChdbLedger(Ledger):
    """The ClickHouse engine inside this process, its data in a directory (under var/).

    chDB is synchronous and a session is not safe across threads: calls run one at a time
    in a worker thread so the event loop never blocks on a merge.
    """

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._session = session.Session(str(path))
        self._lock = threading.Lock()

    def _run(self, sql: str, fmt: str) -> bytes:
        with self._lock:
            result = self._session.query(sql, fmt)
        return bytes(result.bytes()) if result is not None else b""

    async def command(self, sql: str) -> None:
        await asyncio.to_thread(self._run, sql, "CSV")

    async def select(self, sql: str) -> list[dict[str, Any]]:
        return parse_json_each_row(await asyncio.to_thread(self._run, sql, "JSONEachRow"))

    async def close(self) -> None:
        with self._lock:
            self._session.close()


class ClickHouseServerLedger(Ledger):
    """A ClickHouse server (or cluster) over HTTP with clickhouse-connect."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url)
        self._lock = threading.Lock()

    def _command(self, sql: str) -> None:
        with self._lock:
            self._client.command(sql)

    def _select(self, sql: str) -> bytes:
        with self._lock:
            return bytes(self._client.raw_query(sql, fmt="JSONEachRow"))

    async def command(self, sql: str) -> None:
        await asyncio.to_thread(self._command, sql)

    async def select(self, sql: str) -> list[dict[str, Any]]:
        return parse_json_each_row(await asyncio.to_thread(self._select, sql))

    async def close(self) -> None:
        self._client.close()
