"""What each account, key and workspace holds in reservations, kept as a running total.

Admission summed the account's reservations row by row (LIMITS_QUERY), so its cost grew
with the calls in flight and with those ended but not yet settled: at a gateway's peak
hundreds to thousands of rows per account, ~0.2 µs each on SQLite, until that scan was the
largest part of a call's CPU. Each of the three tables now carries `held_nano_usd`, the sum
of `amount_nano_usd` over every reservation row naming it, expired or not. Triggers on
`reservations` keep it, in the same transaction as the row's insert, delete or change, on
both backends, so no code path (admission, release, settlement, the expiry purge, a media
task's hold) can let a total drift from its rows. Admission subtracts the expired rows not
yet purged (an index range at the old end of the account's rows, normally empty), so a
reservation still stops counting at its expiry. (On SQLite a later migration that rebuilds
`reservations` in batch mode drops its triggers, and must create them again.)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, the reservations column naming its row)
SCOPES = (("accounts", "account_id"), ("api_keys", "key_id"), ("workspaces", "workspace_id"))


def _adjust(row: str, sign: str) -> str:
    """The three UPDATEs that add (`+`) or take away (`-`) reservation `row` (NEW or OLD)."""
    return "\n".join(
        f"UPDATE {table} SET held_nano_usd = held_nano_usd {sign} {row}.amount_nano_usd "
        f"WHERE id = {row}.{column};"
        for table, column in SCOPES
    )


def _sqlite_triggers() -> list[str]:
    moved = " OR ".join(
        f"OLD.{column} IS NOT NEW.{column}"
        for column in ("amount_nano_usd", "account_id", "key_id", "workspace_id")
    )
    return [
        "CREATE TRIGGER reservations_held_insert AFTER INSERT ON reservations "
        f"BEGIN {_adjust('NEW', '+')} END",
        "CREATE TRIGGER reservations_held_delete AFTER DELETE ON reservations "
        f"BEGIN {_adjust('OLD', '-')} END",
        "CREATE TRIGGER reservations_held_update AFTER UPDATE ON reservations "
        f"WHEN {moved} BEGIN {_adjust('OLD', '-')} {_adjust('NEW', '+')} END",
    ]


def _postgres_triggers() -> list[str]:
    moved = " OR ".join(
        f"OLD.{column} IS DISTINCT FROM NEW.{column}"
        for column in ("amount_nano_usd", "account_id", "key_id", "workspace_id")
    )
    return [
        f"""
        CREATE FUNCTION reservations_held() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({moved})) THEN
                {_adjust("OLD", "-")}
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND ({moved})) THEN
                {_adjust("NEW", "+")}
            END IF;
            RETURN NULL;
        END
        $$
        """,
        "CREATE TRIGGER reservations_held AFTER INSERT OR UPDATE OR DELETE ON reservations "
        "FOR EACH ROW EXECUTE FUNCTION reservations_held()",
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Services of the previous release may be running: no reservation may be made or
        # ended between the totals' backfill below and the triggers taking over, or that
        # total would be off for good. (SQLite's migration holds the write lock throughout.)
        op.execute("LOCK TABLE reservations IN SHARE ROW EXCLUSIVE MODE")
    for table, column in SCOPES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("held_nano_usd", sa.BigInteger(), nullable=False, server_default="0")
            )
        op.execute(
            f"UPDATE {table} SET held_nano_usd = (SELECT COALESCE(SUM(amount_nano_usd), 0) "
            f"FROM reservations WHERE reservations.{column} = {table}.id)"
        )
    for statement in _postgres_triggers() if postgres else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER reservations_held ON reservations")
        op.execute("DROP FUNCTION reservations_held()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER reservations_held_{event}")
    for table, _ in SCOPES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("held_nano_usd")
