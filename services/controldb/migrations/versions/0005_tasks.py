"""Async media tasks (/v1/jobs): input, provider, state, money and results of each task.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("param", sa.Text(), nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("upstream_model", sa.String(256), nullable=False),
        sa.Column("provider_task_id", sa.String(256), nullable=False),
        sa.Column("submit_claimed_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("markup_basis_points", sa.Integer(), nullable=False),
        sa.Column("reservation_id", sa.String(64), nullable=False),
        sa.Column("reserved_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("billed_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("result_keys", sa.Text(), nullable=False),
        sa.Column("fail_code", sa.String(64), nullable=False),
        sa.Column("fail_msg", sa.String(2000), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("create_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("update_time_ms", sa.BigInteger(), nullable=False),
        sa.Column("complete_time_ms", sa.BigInteger(), nullable=True),
        sa.Column("deadline_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_tasks_account_idempotency"),
    )
    op.create_index("ix_tasks_account_id_id", "tasks", ["account_id", "id"])
    op.create_index("ix_tasks_state", "tasks", ["state"])


def downgrade() -> None:
    op.drop_table("tasks")
