"""People on the dashboard: users, browser sessions, trial grants, Stripe checkout sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("verified_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_users_account_id_accounts"
        ),
        sa.UniqueConstraint("account_id", name="uq_users_account_id"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_web_sessions_user_id_users"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "trial_grants",
        sa.Column("email_normalized", sa.String(320), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("granted_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("email_normalized", name="pk_trial_grants"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_trial_grants_account_id_accounts"
        ),
    )
    op.create_table(
        "checkout_sessions",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("completed_at", UTC_DATETIME, nullable=True),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("payment_intent", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_checkout_sessions"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_checkout_sessions_account_id_accounts"
        ),
        sa.UniqueConstraint("event_id", name="uq_checkout_sessions_event_id"),
    )
    op.create_index("ix_checkout_sessions_account_id", "checkout_sessions", ["account_id"])


def downgrade() -> None:
    op.drop_table("checkout_sessions")
    op.drop_table("trial_grants")
    op.drop_table("web_sessions")
    op.drop_table("users")
