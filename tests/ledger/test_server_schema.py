"""The ledger's DDL against what a ClickHouse server expects, checked without a server.

One schema file (billing/ledger/schema.py) serves chDB and a server alike. What a server adds
is users and grants, and operators who expire or drop old months; docs/clickhouse.md says
how. These tests keep that page true: the grants it documents cover every statement kind
the ledger runs, and its retention statements work on the ledger's own table (run in
chDB, whose parser and MergeTree engine are ClickHouse's).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.ledger import ChdbLedger, ClickHouseServerLedger, SqlLedger
from billing.ledger.schema import BOOTSTRAP, MIGRATIONS, TABLE

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "clickhouse.md"
LEDGER_CODE = REPO_ROOT / "services" / "billing"
DDL = re.compile(r"\b(CREATE|ALTER|DROP|RENAME|TRUNCATE)\s+(TABLE|DATABASE)\b", re.IGNORECASE)
# Beyond the DDL, the ledger INSERTs usage rows and migration records and SELECTs for
# every read (billing/ledger/backends.py, ledger.py, queries.py).
DATA_PRIVILEGES = {"INSERT", "SELECT"}


def _documented_sql() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    statements = [part.strip() for block in blocks for part in block.split(";")]
    return [statement for statement in statements if statement]


def _privileges_needed(formatted: str) -> set[str]:
    """The ClickHouse privilege each DDL statement needs, from its formatted text."""
    if formatted.startswith("CREATE DATABASE"):
        return {"CREATE DATABASE"}
    if formatted.startswith("CREATE TABLE"):
        return {"CREATE TABLE"}
    altered = re.match(r"ALTER TABLE \S+\s+(.*)", formatted, flags=re.DOTALL)
    if altered:
        # Single-line formatting wraps the command list in parentheses.
        body = altered.group(1).strip().removeprefix("(").removesuffix(")")
        commands = re.split(r",\s*(?=[A-Z]+ [A-Z]+)", body)
        return {"ALTER " + " ".join(command.split()[:2]) for command in commands}
    raise AssertionError(f"classify this ledger statement's privilege: {formatted!r}")


@pytest.fixture
async def chdb(tmp_path: Path) -> AsyncIterator[ChdbLedger]:
    ledger = ChdbLedger(tmp_path / "ledger")
    await ledger.migrate()
    yield ledger
    await ledger.close()


async def _formatted(ledger: SqlLedger, statement: str) -> str:
    """ClickHouse's own parser's canonical text of `statement` (raises on bad syntax)."""
    rows = await ledger.query("SELECT formatQuerySingleLine({sql:String}) AS q", {"sql": statement})
    return str(rows[0]["q"])


def test_one_schema_file_for_both_backends() -> None:
    assert ChdbLedger.migrate is SqlLedger.migrate
    assert ClickHouseServerLedger.migrate is SqlLedger.migrate
    elsewhere = [
        path.relative_to(REPO_ROOT)
        for path in LEDGER_CODE.rglob("*.py")
        if path.name != "schema.py" and DDL.search(path.read_text())
    ]
    assert elsewhere == [], f"ledger DDL outside billing/ledger/schema.py: {elsewhere}"


async def test_every_schema_statement_parses_and_is_idempotent(chdb: ChdbLedger) -> None:
    for statement in [*BOOTSTRAP, *(sql for _, sql in MIGRATIONS)]:
        formatted = await _formatted(chdb, statement)
        # Replicas start together and restarts re-run BOOTSTRAP: nothing may fail twice.
        assert "IF NOT EXISTS" in formatted, formatted


async def test_documented_grants_cover_every_ledger_statement(chdb: ChdbLedger) -> None:
    needed = set(DATA_PRIVILEGES)
    for statement in [*BOOTSTRAP, *(sql for _, sql in MIGRATIONS)]:
        needed |= _privileges_needed(await _formatted(chdb, statement))
    documented = [await _formatted(chdb, sql) for sql in _documented_sql()]
    grants = [
        match
        for sql in documented
        if (match := re.fullmatch(r"GRANT (.+) ON aig\.\* TO aig_billing", sql))
    ]
    assert len(grants) == 1, documented
    granted = {privilege.strip() for privilege in grants[0].group(1).split(",")}
    assert needed <= granted, f"docs/clickhouse.md must also grant {needed - granted}"
    assert any(sql.startswith("CREATE USER IF NOT EXISTS aig_billing") for sql in documented)


async def test_documented_retention_statements_work_on_the_ledger(chdb: ChdbLedger) -> None:
    this_month = datetime.now(UTC).strftime("%Y-%m")
    # Older than the documented TTL, the two months the docs detach and drop, and now.
    for month in ("2023-06", "2024-01", "2024-02", this_month):
        await chdb.execute(
            f"INSERT INTO {TABLE} (event_id, occurred_at, account_id) "
            f"VALUES (generateUUIDv4(), '{month}-01 12:00:00', 'acct')"
        )
    retention = [sql for sql in _documented_sql() if sql.startswith(f"ALTER TABLE {TABLE}")]
    assert any("MODIFY TTL" in sql for sql in retention)
    assert any("DROP PARTITION" in sql for sql in retention)
    # The TTL's rewrite of existing parts is a mutation: wait for it here.
    await chdb.execute("SET mutations_sync = 2")
    for sql in retention:
        await chdb.execute(sql)
    kept = await chdb.query(f"SELECT toYYYYMM(occurred_at) AS month FROM {TABLE} FINAL")
    assert kept == [{"month": int(this_month.replace("-", ""))}]
    created = await chdb.query(f"SHOW CREATE TABLE {TABLE}")
    assert "TTL toDateTime(occurred_at) + toIntervalMonth(25)" in next(iter(created[0].values()))
