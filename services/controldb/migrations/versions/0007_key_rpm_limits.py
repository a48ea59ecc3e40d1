"""Per-key request-rate limits: `rpm_limit` and the key's per-minute request counts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        keys.add_column(sa.Column("rpm_minute", sa.BigInteger(), nullable=True))
        keys.add_column(sa.Column("rpm_current", sa.Integer(), nullable=False, server_default="0"))
        keys.add_column(sa.Column("rpm_previous", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as keys:
        for column in ("rpm_previous", "rpm_current", "rpm_minute", "rpm_limit"):
            keys.drop_column(column)
