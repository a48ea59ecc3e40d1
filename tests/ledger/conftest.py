from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import backends
import pytest
from clickhouse_http import chdb_http_server

from billing.ledger import ChdbLedger, ClickHouseServerLedger, SqlLedger
from billing.ledger.schema import DATABASE

BACKENDS = ["chdb", "clickhouse-connect"]


@pytest.fixture(params=BACKENDS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlLedger]:
    """A migrated, empty ledger on each backend in turn.

    chDB runs one engine per process, so only one of the two exists at a time. Locally the
    clickhouse-connect backend reaches chDB through tests/ledger/clickhouse_http.py; with
    AIG_TEST_BACKENDS=containers it reaches a real ClickHouse server (tests/backends.py),
    emptied before each test.
    """
    if request.param == "chdb":
        embedded = ChdbLedger(tmp_path / "ledger")
        assert await embedded.migrate() == [1, 2, 3, 4]
        yield embedded
        await embedded.close()
        return
    if backends.mode() == "containers":
        servers: backends.ContainerServers = request.getfixturevalue("container_servers")
        remote = ClickHouseServerLedger(servers.ledger_server_url())
        await remote.execute(f"DROP DATABASE IF EXISTS {DATABASE} SYNC")
        assert await remote.migrate() == [1, 2, 3, 4]
        yield remote
        await remote.close()
        return
    with chdb_http_server(tmp_path / "server") as server:
        remote = ClickHouseServerLedger(server.url)
        assert await remote.migrate() == [1, 2, 3, 4]
        yield remote
        await remote.close()
