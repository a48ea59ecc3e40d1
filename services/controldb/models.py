"""Tables of the control database.

The schema is owned by the Alembic migrations in `services/controldb/migrations`; these models
must describe exactly what the migrations create (a test compares them). New tables
(workspaces, caps, balances, credits) come with new migrations, never by editing 0001.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints let later migrations drop or alter them on every backend (SQLite's
# batch mode recreates tables and can only carry over constraints that have names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no offset, so values come back naive; they were written as UTC, and are
    handed back as aware UTC datetimes so callers never compare naive with aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime}


STARTER_MARKUP_BASIS_POINTS = 4000


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Credits minus settled spend, kept in step with credit_entries and settlements in the
    # same transactions, so admission reads one row instead of summing two ledgers.
    balance_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    tier: Mapped[str] = mapped_column(String(32), default="starter")
    markup_basis_points: Mapped[int] = mapped_column(Integer, default=STARTER_MARKUP_BASIS_POINTS)
    rolling_30d_spend_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    tier_computed_at: Mapped[datetime | None] = mapped_column(default=None)
    daily_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Workspace(Base):
    """A team inside an account: its caps hold across all of its keys together."""

    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    daily_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    workspace_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("workspaces.id"), default=None, index=True
    )
    daily_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class CreditEntry(Base):
    """Append-only: every change to an account's credits other than usage."""

    __tablename__ = "credit_entries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), index=True)
    # purchase | bonus | grant | refund
    kind: Mapped[str] = mapped_column(String(16))
    # Signed: refunds are negative.
    amount_nano_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    note: Mapped[str] = mapped_column(String(200), default="")


class Settlement(Base):
    """One row per usage event ever settled: the idempotency record of billing."""

    __tablename__ = "settlements"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    billed_nano_usd: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column()
    settled_at: Mapped[datetime] = mapped_column(default=utcnow)


class SpendCounter(Base):
    """Settled spend of one key, workspace or account in one UTC day or month."""

    __tablename__ = "spend_counters"

    # key | workspace | account
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "2026-11-25" for a day, "2026-11" for a month.
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    spent_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)


class Reservation(Base):
    """Worst-case cost held for a call in flight, until settlement or expiry."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str | None] = mapped_column(String(64), default=None)
    amount_nano_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
