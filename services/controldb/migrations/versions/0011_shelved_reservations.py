"""Reservations admitted ahead of their calls say until when they may wait on a shelf.

An edge admits a busy key's next calls ahead of them and keeps the reservations on a shelf
in memory (edge.reservation_pool). Near a limit, another edge's call could be refused for
the room such a shelf holds, though no call of that key may come to take it. The row now
carries `shelved_until`: by then a call has taken it or its edge has given it back. An edge
refused for lack of money waits until the latest `shelved_until` of the account's rows and
asks once more. Rows of calls admitted on their own leave it NULL.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, without a default: on SQLite a plain ALTER TABLE ... ADD COLUMN, which keeps
    # the table and its triggers (migration 0010); a batch rebuild would drop them.
    column = sa.Column("shelved_until", sa.DateTime(timezone=True), nullable=True)
    op.add_column("reservations", column)


def downgrade() -> None:
    # DROP COLUMN on both backends (SQLite 3.35 and later), again without a rebuild.
    op.execute("ALTER TABLE reservations DROP COLUMN shelved_until")
