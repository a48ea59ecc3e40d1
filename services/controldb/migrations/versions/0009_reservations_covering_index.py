"""Admission reads an account's live reservations from one covering index.

Every admission sums the amounts its account holds in live reservations (all, this key's,
this workspace's). With an index on `account_id` alone, each reservation in flight cost a
lookup of its table row; on (account_id, expires_at) with the summed columns beside them
the read is a range scan of the index alone. It replaces the `account_id` index, which it
begins with.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["account_id", "expires_at", "amount_nano_usd", "key_id", "workspace_id"]


def upgrade() -> None:
    op.create_index("ix_reservations_account_live", "reservations", COLUMNS)
    op.drop_index("ix_reservations_account_id", table_name="reservations")


def downgrade() -> None:
    op.create_index("ix_reservations_account_id", "reservations", ["account_id"])
    op.drop_index("ix_reservations_account_live", table_name="reservations")
