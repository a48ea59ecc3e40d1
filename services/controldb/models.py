"""Tables of the control database.

The schema is owned by the Alembic migrations in `services/controldb/migrations`; these models
must describe exactly what the migrations create (a test compares them). New tables
(workspaces, caps, balances, credits) come with new migrations, never by editing 0001.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
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


def sqlite_timestamp_text(dialect: Dialect) -> Callable[[datetime], Any]:
    """How a UTCDateTime is written on SQLite (UTC text without an offset), for statements
    run on the bare sqlite3 connection (admission's group commit, settlement). It is the
    type as adapted to the dialect: the unadapted type's processor added "+00:00"."""
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return processor


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
    # What this account's reservations hold in all (expired ones until purged), kept by
    # triggers on `reservations` (migration 0010) so admission reads it instead of summing rows.
    held_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)


class Workspace(Base):
    """A team inside an account: its caps hold across all of its keys together."""

    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    daily_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_cap_nano_usd: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # What this workspace's reservations hold in all (expired ones until purged), kept by
    # triggers on `reservations` (migration 0010) so admission reads it instead of summing rows.
    held_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)


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
    # Requests per minute (None: unlimited) and the key's request counts of the current and
    # previous UTC minute, which admission reads and writes under the account's lock
    # (controldb.ratelimit). On the key's own row, so a key without a limit costs nothing.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    rpm_minute: Mapped[int | None] = mapped_column(BigInteger, default=None)
    rpm_current: Mapped[int] = mapped_column(Integer, default=0)
    rpm_previous: Mapped[int] = mapped_column(Integer, default=0)
    # What this key's reservations hold in all (expired ones until purged), kept by
    # triggers on `reservations` (migration 0010) so admission reads it instead of summing rows.
    held_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)

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
    # Admission finds an account's expired reservations not yet purged at the old end of
    # its range in this index alone (LIMITS_QUERY's `_expired`).
    __table_args__ = (
        Index(
            "ix_reservations_account_live",
            "account_id",
            "expires_at",
            "amount_nano_usd",
            "key_id",
            "workspace_id",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str | None] = mapped_column(String(64), default=None)
    amount_nano_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # Set on a reservation admitted ahead of its call (an edge's shelf): by then a call has
    # taken it or the edge gives it back. Another edge refused for the room it holds waits
    # until then and asks again (edge.admission).
    shelved_until: Mapped[datetime | None] = mapped_column(default=None)


class WebhookSecret(Base):
    """An account's webhook signing keys: the Standard Webhooks `whsec_` secret, the one it
    replaced (still signing until `previous_valid_until`) and Kie's opt-in HMAC key.

    Kept in plain text: signing needs the secret itself, as the receiver's copy does."""

    __tablename__ = "webhook_secrets"

    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_valid_until: Mapped[datetime | None] = mapped_column(default=None)
    rotated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kie's X-Webhook-Signature, sent only while the account has one.
    kie_hmac_key: Mapped[str | None] = mapped_column(String(128), default=None)


class WebhookDelivery(Base):
    """One callback to deliver: the terminal event of one task, POSTed until it is answered
    2xx, dead-lettered or disabled. Its id is the `webhook-id` header of every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # One delivery per task, whichever event (or redelivery of it) arrived first.
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    callback_url: Mapped[str] = mapped_column(String(2048))
    # The exact body every attempt POSTs, so each attempt signs the same bytes.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # pending | delivered | dead | disabled | refused
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts since the delivery was (re)started: the position in the retry schedule.
    schedule_index: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    # A replica's lease on the row while it runs an attempt; the token fences late writers.
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookAttempt(Base):
    """Append-only: every POST (or refusal) of a delivery, with what came back."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("webhook_deliveries.id"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[int] = mapped_column(Integer)
    # The receiver's HTTP status; null when none came (timeout, refused connection, SSRF).
    status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    # delivered | retry | dead | disabled | refused
    outcome: Mapped[str] = mapped_column(String(16))


class DisabledCallbackUrl(Base):
    """A callback URL an account's receiver retired by answering 410 Gone: nothing more is
    POSTed to it for that account until an operator redelivers to it."""

    __tablename__ = "disabled_callback_urls"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    callback_url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    disabled_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivery_id: Mapped[str] = mapped_column(String(64))


class User(Base):
    """A person who signs in to the dashboard; each owns one account."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), unique=True)
    # Lower-cased as typed; the trial is keyed on a further-normalised form (TrialGrant).
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class TrialGrant(Base):
    """The $10 trial, once per normalised verified address, ever (the row is never deleted)."""

    __tablename__ = "trial_grants"

    email_normalized: Mapped[str] = mapped_column(String(320), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class CheckoutSession(Base):
    """A Stripe Checkout session we opened: which account pays how much. The webhook credits
    from this row (not from the event's metadata) and marks it completed, once."""

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), ForeignKey("accounts.id"), index=True)
    amount_nano_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # The Stripe event that completed it; unique, so one event never credits twice.
    event_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    payment_intent: Mapped[str | None] = mapped_column(String(255), default=None)


class Task(Base):
    """One async media task (/v1/jobs): its input, where it runs, its state and its money.

    Times are Unix milliseconds, as Kie's recordInfo reports them. State changes are
    conditional updates (`WHERE state = <expected>`), so two jobs processes following the
    same task never both record, publish or bill one change.
    """

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # task_<uuid7 hex>
    account_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str | None] = mapped_column(String(64), default=None)
    request_id: Mapped[str] = mapped_column(String(64), default="")
    model: Mapped[str] = mapped_column(String(128))
    # waiting | queuing | generating | success | fail (Kie's states)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The createTask body as received ({"model", "callBackUrl", "input"}), JSON text.
    param: Mapped[str] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    # Which provider instance / upstream model serves it, and the provider's own id.
    provider: Mapped[str] = mapped_column(String(64), default="")
    upstream_model: Mapped[str] = mapped_column(String(256), default="")
    provider_task_id: Mapped[str] = mapped_column(String(256), default="")
    # Set once, atomically, by the jobs process that submits: the DB guard against a
    # second submission when a TaskRequested is delivered twice.
    submit_claimed_at_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The jobs replica following the task (its AIG_INSTANCE_ID) and until when: renewed
    # while it follows, so when a replica goes away for good (a scale-down) another adopts
    # its tasks once the lease has run out (controldb.tasks.TaskStore.adopt).
    followed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    followed_until_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    units: Mapped[int] = mapped_column(BigInteger)
    unit_price_nano_usd: Mapped[int] = mapped_column(BigInteger)
    markup_basis_points: Mapped[int] = mapped_column(Integer)
    reservation_id: Mapped[str] = mapped_column(String(64))
    reserved_nano_usd: Mapped[int] = mapped_column(BigInteger)
    # What the customer was billed (after markup); 0 until success, and forever on fail.
    billed_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    # Storage keys of the results aig keeps (JSON array), signed into URLs when read.
    result_keys: Mapped[str] = mapped_column(Text, default="[]")
    fail_code: Mapped[str] = mapped_column(String(64), default="")
    fail_msg: Mapped[str] = mapped_column(String(2000), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    # sha256 of the createTask body: the same Idempotency-Key with another body is a 409.
    body_sha256: Mapped[str] = mapped_column(String(64), default="")
    create_time_ms: Mapped[int] = mapped_column(BigInteger)
    update_time_ms: Mapped[int] = mapped_column(BigInteger)
    complete_time_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    deadline_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_tasks_account_id_id", "account_id", "id"),
        UniqueConstraint("account_id", "idempotency_key", name="uq_tasks_account_idempotency"),
    )


class StoredResponse(Base):
    """One /v1/responses call of an account: what `GET /v1/responses/{id}`, its input items
    and a later `previous_response_id` read. A `store: false` call leaves only a marker
    (no prompt or answer), so a follow-up learns why it cannot continue from it.

    The JSON columns hold Responses items: `context_items` is the conversation the call
    continued (its previous response's context, input and output), `input_items` its own.
    """

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # resp_<48 hex>
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stored: Mapped[bool] = mapped_column(Boolean)
    response: Mapped[str] = mapped_column(Text, default="")
    input_items: Mapped[str] = mapped_column(Text, default="[]")
    context_items: Mapped[str] = mapped_column(Text, default="[]")
