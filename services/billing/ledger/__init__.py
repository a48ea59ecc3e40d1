"""The usage ledger: one ClickHouse table, two interchangeable backends.

`AIG_CLICKHOUSE_URL` (e.g. `http://user:password@clickhouse:8123/`) selects a ClickHouse
server through clickhouse-connect; without it chDB keeps the ledger in `<var>/ledger`
(or in `AIG_LEDGER_DIR`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .backends import ChdbLedger, ClickHouseServerLedger
from .ledger import Ledger, Param, SqlLedger
from .rows import COLUMNS, UsageRow

__all__ = [
    "COLUMNS",
    "ChdbLedger",
    "ClickHouseServerLedger",
    "Ledger",
    "Param",
    "SqlLedger",
    "UsageRow",
    "ledger_from_env",
]


def ledger_from_env(env: Mapping[str, str], var_dir: Path) -> Ledger:
    url = env.get("AIG_CLICKHOUSE_URL", "").strip()
    if url:
        return ClickHouseServerLedger(url)
    return ChdbLedger(Path(env.get("AIG_LEDGER_DIR") or var_dir / "ledger"))
