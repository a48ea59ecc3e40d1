"""What the billing service needs from the ledger, and that logic written once over SQL."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from . import queries
from .rows import UsageRow, datetime_text
from .schema import BOOTSTRAP, MIGRATIONS, MIGRATIONS_TABLE

# What a `{name:Type}` placeholder may be bound to.
Param = str | int | bool | datetime


class Ledger(Protocol):
    """The usage ledger. Implementations differ only in how SQL reaches ClickHouse."""

    async def migrate(self) -> list[int]:
        """Applies the migrations not applied yet, in order; returns their versions."""
        ...

    async def insert(self, rows: Sequence[UsageRow]) -> None:
        """Writes a batch. Rows whose event id is already stored collapse into one."""
        ...

    async def query(
        self, sql: str, params: Mapping[str, Param] | None = None
    ) -> list[dict[str, Any]]:
        """Runs a SELECT with `{name:Type}` placeholders bound server-side; rows as dicts
        decoded from JSONEachRow (64-bit integers as exact ints, dates as text)."""
        ...

    async def close(self) -> None: ...

    async def usage_summary(
        self, account_id: str, start: datetime, end: datetime, group_by: str
    ) -> list[dict[str, Any]]: ...

    async def recent_calls(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        filters: Mapping[str, str],
        limit: int,
    ) -> list[dict[str, Any]]: ...

    async def rolling_spend_nano_usd(
        self, account_id: str | None = None, *, since: datetime
    ) -> dict[str, int]: ...

    async def count_events(
        self,
        account_id: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        outcome: str | None = None,
    ) -> int: ...


class SqlLedger(abc.ABC):
    """Migrations and analytics on top of three primitives a backend provides."""

    @abc.abstractmethod
    async def execute(self, sql: str) -> None:
        """Runs a statement that returns no rows (DDL, bookkeeping inserts)."""

    @abc.abstractmethod
    async def query(
        self, sql: str, params: Mapping[str, Param] | None = None
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def insert(self, rows: Sequence[UsageRow]) -> None: ...

    async def close(self) -> None:
        return None

    async def migrate(self) -> list[int]:
        for statement in BOOTSTRAP:
            await self.execute(statement)
        done = {int(row["version"]) for row in await self.query(_APPLIED_VERSIONS)}
        applied: list[int] = []
        for version, statement in MIGRATIONS:
            if version in done:
                continue
            await self.execute(statement)
            # Recorded after the statement succeeded; every statement is idempotent
            # (IF NOT EXISTS), so a crash between the two only means it runs again.
            await self.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ({version})")
            applied.append(version)
        return applied

    async def usage_summary(
        self, account_id: str, start: datetime, end: datetime, group_by: str
    ) -> list[dict[str, Any]]:
        """Per model, key or UTC day: calls, outcomes, tokens and cost (nano-USD ints)
        of one account in [start, end)."""
        return await self.query(
            queries.usage_summary_sql(group_by),
            {"account_id": account_id, "start": start, "end": end},
        )

    async def recent_calls(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        filters: Mapping[str, str],
        limit: int,
    ) -> list[dict[str, Any]]:
        """Calls of one account in [start, end), newest first, at most `limit`; `filters`
        (model, key_id, outcome) narrow by exact match. Money as nano-USD ints."""
        params: dict[str, Param] = {
            "account_id": account_id,
            "start": start,
            "end": end,
            "limit": limit,
            **filters,
        }
        return await self.query(queries.recent_calls_sql(tuple(sorted(filters))), params)

    async def rolling_spend_nano_usd(
        self, account_id: str | None = None, *, since: datetime
    ) -> dict[str, int]:
        """Billed spend of successful calls since `since`, per account (the tier input).
        Accounts without such calls are absent."""
        params: dict[str, Param] = {"since": since}
        if account_id is not None:
            params["account_id"] = account_id
        rows = await self.query(
            queries.rolling_spend_sql(one_account=account_id is not None), params
        )
        return {str(row["account_id"]): int(row["spend_nano_usd"]) for row in rows}

    async def count_events(
        self,
        account_id: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        outcome: str | None = None,
    ) -> int:
        """Distinct events stored (redelivered copies count once)."""
        candidates: dict[str, Param | None] = {
            "account_id": account_id,
            "start": start,
            "end": end,
            "outcome": outcome,
        }
        params = {name: value for name, value in candidates.items() if value is not None}
        sql = queries.count_events_sql(
            account=account_id is not None,
            start=start is not None,
            end=end is not None,
            outcome=outcome is not None,
        )
        rows = await self.query(sql, params)
        return int(rows[0]["events"])


_APPLIED_VERSIONS = f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version"


def param_text(value: Param) -> str:
    """A parameter as the text ClickHouse parses for its `{name:Type}`, before escaping.

    Formatting it ourselves means both backends send the very same value; clickhouse-connect
    would otherwise render datetimes its own way (to whole seconds, unless told the type).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return datetime_text(value)
    return str(value)
