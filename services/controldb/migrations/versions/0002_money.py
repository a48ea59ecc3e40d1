"""Balances, credits, tiers, settlements, spend counters, workspaces, caps, reservations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as accounts:
        accounts.add_column(
            sa.Column("balance_nano_usd", sa.BigInteger(), nullable=False, server_default="0")
        )
        accounts.add_column(
            sa.Column("tier", sa.String(32), nullable=False, server_default="starter")
        )
        accounts.add_column(
            sa.Column("markup_basis_points", sa.Integer(), nullable=False, server_default="4000")
        )
        accounts.add_column(
            sa.Column(
                "rolling_30d_spend_nano_usd", sa.BigInteger(), nullable=False, server_default="0"
            )
        )
        accounts.add_column(sa.Column("tier_computed_at", UTC_DATETIME, nullable=True))
        accounts.add_column(sa.Column("daily_cap_nano_usd", sa.BigInteger(), nullable=True))
        accounts.add_column(sa.Column("monthly_cap_nano_usd", sa.BigInteger(), nullable=True))

    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("daily_cap_nano_usd", sa.BigInteger(), nullable=True),
        sa.Column("monthly_cap_nano_usd", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_workspaces_account_id_accounts"
        ),
    )
    op.create_index("ix_workspaces_account_id", "workspaces", ["account_id"])

    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("workspace_id", sa.String(64), nullable=True))
        keys.add_column(sa.Column("daily_cap_nano_usd", sa.BigInteger(), nullable=True))
        keys.add_column(sa.Column("monthly_cap_nano_usd", sa.BigInteger(), nullable=True))
        keys.create_foreign_key(
            "fk_api_keys_workspace_id_workspaces", "workspaces", ["workspace_id"], ["id"]
        )
        keys.create_index("ix_api_keys_workspace_id", ["workspace_id"])

    op.create_table(
        "credit_entries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_entries"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_credit_entries_account_id_accounts"
        ),
    )
    op.create_index("ix_credit_entries_account_id", "credit_entries", ["account_id"])
    op.create_index("ix_credit_entries_created_at", "credit_entries", ["created_at"])

    op.create_table(
        "settlements",
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("billed_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTC_DATETIME, nullable=False),
        sa.Column("settled_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_settlements"),
    )
    op.create_index("ix_settlements_account_id", "settlements", ["account_id"])

    op.create_table(
        "spend_counters",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("spent_nano_usd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "scope_id", "period", name="pk_spend_counters"),
    )

    op.create_table(
        "reservations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=True),
        sa.Column("amount_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reservations"),
    )
    op.create_index("ix_reservations_account_id", "reservations", ["account_id"])
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("spend_counters")
    op.drop_table("settlements")
    op.drop_table("credit_entries")
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_index("ix_api_keys_workspace_id")
        keys.drop_constraint("fk_api_keys_workspace_id_workspaces", type_="foreignkey")
        keys.drop_column("monthly_cap_nano_usd")
        keys.drop_column("daily_cap_nano_usd")
        keys.drop_column("workspace_id")
    op.drop_table("workspaces")
    with op.batch_alter_table("accounts") as accounts:
        for column in (
            "monthly_cap_nano_usd",
            "daily_cap_nano_usd",
            "tier_computed_at",
            "rolling_30d_spend_nano_usd",
            "markup_basis_points",
            "tier",
            "balance_nano_usd",
        ):
            accounts.drop_column(column)
