from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chdb_http_endpoint import chdb_http_server

from billing.usage_ledger import ChdbLedger, ClickHouseServerLedger, Ledger


@pytest.fixture(params=["chdb", "clickhouse-connect"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "chdb":
        backend: Ledger = ChdbLedger(tmp_path / "ledger")
        await backend.migrate()
        yield backend
        await backend.close()
        return
    with chdb_http_server(tmp_path / "server") as url:
        backend = ClickHouseServerLedger(url)
        await backend.migrate()
        yield backend
        await backend.close()
