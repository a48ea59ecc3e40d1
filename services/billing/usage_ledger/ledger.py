"""The ledger's operations, written once in ClickHouse SQL; backends only execute it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from .rows import COLUMNS, UsageRow, literal, values_clause
from .schema import BOOTSTRAP, DATABASE, MIGRATIONS, TABLE

GROUP_EXPRESSIONS = {
    "model": ("model", "model"),
    "key": ("key_id", "key_id"),
    "day": ("toString(toDate(occurred_at))", "day"),
}
_INT_FIELDS = (
    "calls",
    "succeeded",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "billed_cost_nano_usd",
    "upstream_cost_nano_usd",
)


class Ledger(abc.ABC):
    """Usage rows in ClickHouse. Subclasses say how SQL reaches the engine."""

    @abc.abstractmethod
    async def command(self, sql: str) -> None:
        """Runs a statement that returns nothing."""

    @abc.abstractmethod
    async def select(self, sql: str) -> list[dict[str, Any]]:
        """Runs a SELECT and returns its rows (JSONEachRow semantics)."""

    async def close(self) -> None:
        return None

    async def migrate(self) -> list[int]:
        """Applies missing migrations in order; returns the versions applied now."""
        for statement in BOOTSTRAP:
            await self.command(statement)
        done = {
            int(row["version"])
            for row in await self.select(f"SELECT version FROM {DATABASE}.schema_migrations")
        }
        applied = []
        for version, statement in MIGRATIONS:
            if version in done:
                continue
            await self.command(statement)
            await self.command(
                f"INSERT INTO {DATABASE}.schema_migrations (version) VALUES ({version})"
            )
            applied.append(version)
        return applied

    async def insert(self, rows: Sequence[UsageRow]) -> None:
        if rows:
            await self.command(
                f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES {values_clause(list(rows))}"
            )

    async def usage_summary(
        self, account_id: str, start: datetime, end: datetime, group_by: str
    ) -> list[dict[str, Any]]:
        expression, name = GROUP_EXPRESSIONS[group_by]
        rows = await self.select(
            f"""
            SELECT {expression} AS {name},
                   toInt64(count()) AS calls,
                   toInt64(countIf(outcome = 'succeeded')) AS succeeded,
                   toInt64(countIf(outcome = 'failed')) AS failed,
                   toInt64(sum(prompt_tokens)) AS prompt_tokens,
                   toInt64(sum(completion_tokens)) AS completion_tokens,
                   toInt64(sum(billed_cost_nano_usd)) AS billed_cost_nano_usd,
                   toInt64(sum(upstream_cost_nano_usd)) AS upstream_cost_nano_usd
            FROM {TABLE} FINAL
            WHERE account_id = {literal(account_id)}
              AND occurred_at >= {literal(start)} AND occurred_at < {literal(end)}
            GROUP BY {name}
            ORDER BY {name}
            """
        )
        return [_ints(row) for row in rows]

    async def rolling_spend_nano_usd(self, *, since: datetime) -> dict[str, int]:
        """Billed spend of successful calls per account since `since` (the tier input)."""
        rows = await self.select(
            f"""
            SELECT account_id, toInt64(sum(billed_cost_nano_usd)) AS spend
            FROM {TABLE} FINAL
            WHERE outcome = 'succeeded' AND occurred_at >= {literal(since)}
            GROUP BY account_id
            """
        )
        return {str(row["account_id"]): int(row["spend"]) for row in rows}

    async def count_events(self, account_id: str | None = None) -> dict[str, int]:
        where = f"WHERE account_id = {literal(account_id)}" if account_id else ""
        rows = await self.select(
            f"""
            SELECT outcome, toInt64(count()) AS events
            FROM {TABLE} FINAL {where}
            GROUP BY outcome
            """
        )
        return {str(row["outcome"]): int(row["events"]) for row in rows}


def _ints(row: dict[str, Any]) -> dict[str, Any]:
    # 64-bit integers may arrive quoted in JSON; money must come back as exact ints.
    return {key: int(value) if key in _INT_FIELDS else value for key, value in row.items()}


def parse_json_each_row(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
