"""Webhook state in the control database: signing secrets, deliveries and their attempts.

The webhooks service writes it (a delivery per terminal task event, an attempt per POST);
the edge reads it (a task's deliveries, the account's secret) and changes it (rotation,
Kie's HMAC key, redelivery). Several webhooks replicas share it: an attempt is run only by
the replica holding the row's lease (`claim_due`), and its result is written only under
that lease's token (`finish_attempt`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controldb.engine import reader_of
from controldb.ids import random_id
from controldb.keystore import AccountNotFound
from controldb.models import (
    Account,
    DisabledCallbackUrl,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSecret,
)

SECRET_PREFIX = "whsec_"
# 32 random bytes: within Standard Webhooks' 24 to 64, and SHA-256's output size.
SECRET_BYTES = 32
# How long the replaced secret keeps signing after a rotation, so receivers can switch.
ROTATION_OVERLAP = timedelta(hours=24)

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
DISABLED = "disabled"
REFUSED = "refused"
FINAL_STATES = (DELIVERED, DEAD, DISABLED, REFUSED)
RETRY = "retry"  # an attempt's outcome only: the delivery stays pending


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_kie_hmac_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SecretView:
    account_id: str
    secret: str
    previous_secret: str | None
    previous_valid_until: datetime | None
    rotated_at: datetime
    kie_hmac_key: str | None

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign a message sent at `now`: the current one first."""
        if self.previous_secret and self.previous_valid_until and now < self.previous_valid_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    task_id: str
    event_id: str
    account_id: str
    callback_url: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    task_id: str
    account_id: str
    callback_url: str
    payload: bytes
    attempts: int
    schedule_index: int
    claim_token: str
    # The account's receiver retired this URL with a 410: nothing is sent.
    url_disabled: bool


@dataclass(frozen=True, slots=True)
class AttemptResult:
    started_at: datetime
    duration_ms: int
    status: int | None
    error: str | None
    outcome: str  # delivered | retry | dead | disabled | refused
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AttemptView:
    number: int
    started_at: datetime
    duration_ms: int
    status: int | None
    error: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: str
    task_id: str
    account_id: str
    callback_url: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: tuple[AttemptView, ...]


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


class WebhookStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._reads = reader_of(sessions)

    # -- secrets ---------------------------------------------------------------------------

    async def secret(self, account_id: str) -> SecretView:
        """The account's signing secrets, made on first use (by whichever asks first).

        Read without the write lock first: on SQLite a transaction that takes it queues
        with every write on the file, and under load (intake, claims, attempts recorded)
        such a wait ran past the busy timeout and failed the attempt, which then waited out
        its lease. Once made, a secret is only read; intake makes it (`add_deliveries`)."""
        async with self._reads() as session, session.begin():
            found = await session.get(WebhookSecret, account_id)
            if found is not None:
                return _secret_view(found)
        async with self._sessions() as session, session.begin():
            await self._make_secrets(session, {account_id})
            row = await session.get(WebhookSecret, account_id, populate_existing=True)
            if row is None:  # no such account: none was made
                raise AccountNotFound(account_id)
            return _secret_view(row)

    async def rotate_secret(
        self, account_id: str, overlap: timedelta = ROTATION_OVERLAP
    ) -> SecretView:
        """A new current secret; the old one keeps signing for `overlap`. Rotating again
        within the overlap retires the oldest at once: at most two secrets ever sign."""
        await self.secret(account_id)
        async with self._sessions() as session, session.begin():
            row = await session.get(WebhookSecret, account_id, with_for_update=True)
            assert row is not None
            now = datetime.now(UTC)
            row.previous_secret = row.secret
            row.previous_valid_until = now + overlap
            row.secret = new_signing_secret()
            row.rotated_at = now
            return _secret_view(row)

    async def set_kie_hmac(self, account_id: str, enabled: bool) -> SecretView:
        """Turns Kie's X-Webhook-Signature on (a fresh key each time) or off."""
        await self.secret(account_id)
        async with self._sessions() as session, session.begin():
            row = await session.get(WebhookSecret, account_id, with_for_update=True)
            assert row is not None
            row.kie_hmac_key = new_kie_hmac_key() if enabled else None
            return _secret_view(row)

    # -- deliveries ------------------------------------------------------------------------

    async def add_deliveries(self, items: Sequence[NewDelivery]) -> int:
        """Stores one pending delivery per task, due now; a task that already has one (a
        redelivered or repeated terminal event) is left alone. Returns how many are new."""
        if not items:
            return 0
        now = datetime.now(UTC)
        by_task = {item.task_id: item for item in items}
        async with self._sessions() as session, session.begin():
            statement = _insert(session)(WebhookDelivery).on_conflict_do_nothing(
                index_elements=["task_id"]
            )
            result = await session.execute(
                statement.returning(WebhookDelivery.id),
                [
                    {
                        "id": random_id("msg"),
                        "task_id": item.task_id,
                        "event_id": item.event_id,
                        "account_id": item.account_id,
                        "callback_url": item.callback_url,
                        "payload": item.payload,
                        "state": PENDING,
                        "attempts": 0,
                        "schedule_index": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for item in by_task.values()
                ],
            )
            added = len(result.all())
            await self._make_secrets(session, {item.account_id for item in by_task.values()})
            return added

    @staticmethod
    async def _make_secrets(session: AsyncSession, account_ids: set[str]) -> None:
        """Makes the signing secret of each account that has none yet, in the intake's own
        transaction: the deliveries about to be signed then find it with a read."""
        have = set(
            await session.scalars(
                select(WebhookSecret.account_id).where(WebhookSecret.account_id.in_(account_ids))
            )
        )
        missing = account_ids - have
        if not missing:
            return
        # An account that does not exist gets none (its deliveries end as dead letters).
        existing = await session.scalars(select(Account.id).where(Account.id.in_(missing)))
        now = datetime.now(UTC)
        rows = [
            {"account_id": account_id, "secret": new_signing_secret(), "rotated_at": now}
            for account_id in existing
        ]
        if rows:
            # Another replica (or intake) may make one at once: the first insert wins, and
            # both read it.
            await session.execute(_insert(session)(WebhookSecret).on_conflict_do_nothing(), rows)

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[ClaimedDelivery]:
        """Leases up to `limit` due deliveries to the caller until `now + lease`.

        PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas claiming at once take disjoint
        rows without waiting on each other. SQLite: the transaction holds the write lock
        from its first statement (`BEGIN IMMEDIATE`), so claims are serialised. Either way
        a row whose lease is current is not due: a replica that died mid-attempt gives its
        rows back when the lease runs out.
        """
        token = secrets.token_hex(16)
        disabled = exists().where(
            DisabledCallbackUrl.account_id == WebhookDelivery.account_id,
            DisabledCallbackUrl.callback_url == WebhookDelivery.callback_url,
        )
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.state == PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                        or_(
                            WebhookDelivery.claimed_until.is_(None),
                            WebhookDelivery.claimed_until < now,
                        ),
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            ids = [row.id for row in rows]
            if not ids:
                return []
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(claim_token=token, claimed_until=now + lease)
            )
            claimed = await session.execute(
                select(WebhookDelivery, disabled.label("url_disabled")).where(
                    WebhookDelivery.id.in_(ids)
                )
            )
            return [
                ClaimedDelivery(
                    id=row.id,
                    task_id=row.task_id,
                    account_id=row.account_id,
                    callback_url=row.callback_url,
                    payload=row.payload,
                    attempts=row.attempts,
                    schedule_index=row.schedule_index,
                    claim_token=token,
                    url_disabled=bool(url_disabled),
                )
                for row, url_disabled in claimed.all()
            ]

    async def hand_back(self, claimed: ClaimedDelivery, due_at: datetime) -> bool:
        """Shortens the caller's lease to `due_at` without recording an attempt: for an
        attempt that failed before anything was sent, so the delivery is tried again then
        instead of when the whole lease runs out. Fenced like `finish_attempts`: False
        (nothing changed) if another replica has taken the row over."""
        async with self._sessions() as session, session.begin():
            changed = await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == claimed.id,
                    WebhookDelivery.claim_token == claimed.claim_token,
                )
                .values(claimed_until=due_at)
            )
        return getattr(changed, "rowcount", 0) == 1

    async def finish_attempt(self, claimed: ClaimedDelivery, result: AttemptResult) -> bool:
        return (await self.finish_attempts([(claimed, result)]))[0]

    async def finish_attempts(
        self, finished: Sequence[tuple[ClaimedDelivery, AttemptResult]]
    ) -> list[bool]:
        """Records attempts and their deliveries' new states in one transaction, each only
        if its caller still holds the lease; False (nothing written for that one) where
        another replica has taken the row over."""
        written: list[bool] = []
        async with self._sessions() as session, session.begin():
            for claimed, result in finished:
                written.append(await self._finish(session, claimed, result))
        return written

    async def _finish(
        self, session: AsyncSession, claimed: ClaimedDelivery, result: AttemptResult
    ) -> bool:
        final = result.outcome in FINAL_STATES
        changed = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claimed.id,
                WebhookDelivery.claim_token == claimed.claim_token,
            )
            .values(
                state=result.outcome if final else PENDING,
                attempts=WebhookDelivery.attempts + 1,
                schedule_index=WebhookDelivery.schedule_index + 1,
                next_attempt_at=None if final else result.next_attempt_at,
                claim_token=None,
                claimed_until=None,
                last_status=result.status,
                last_error=result.error,
                completed_at=datetime.now(UTC) if final else None,
            )
        )
        if getattr(changed, "rowcount", 0) != 1:
            return False
        session.add(
            WebhookAttempt(
                delivery_id=claimed.id,
                number=claimed.attempts + 1,
                started_at=result.started_at,
                duration_ms=result.duration_ms,
                status=result.status,
                error=result.error,
                outcome=result.outcome,
            )
        )
        if result.outcome == DISABLED and not claimed.url_disabled:
            await session.execute(
                _insert(session)(DisabledCallbackUrl)
                .values(
                    account_id=claimed.account_id,
                    callback_url=claimed.callback_url,
                    disabled_at=datetime.now(UTC),
                    delivery_id=claimed.id,
                )
                .on_conflict_do_nothing()
            )
        return True

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due (leases aside): the loop's wake-up."""
        async with self._reads() as session:
            return await session.scalar(
                select(WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.state == PENDING)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(1)
            )

    async def redeliver(self, delivery_id: str) -> DeliveryView | None:
        """An operator's replay: due now, with a fresh retry schedule and the same
        `webhook-id`. It also re-enables the URL if a 410 had disabled it."""
        async with self._sessions() as session, session.begin():
            row = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None:
                return None
            await session.execute(
                delete(DisabledCallbackUrl).where(
                    and_(
                        DisabledCallbackUrl.account_id == row.account_id,
                        DisabledCallbackUrl.callback_url == row.callback_url,
                    )
                )
            )
            row.state = PENDING
            row.schedule_index = 0
            row.next_attempt_at = datetime.now(UTC)
            row.claim_token = None
            row.claimed_until = None
            row.completed_at = None
        return await self.delivery(delivery_id)

    # -- reading ---------------------------------------------------------------------------

    async def delivery(self, delivery_id: str) -> DeliveryView | None:
        async with self._reads() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            if row is None:
                return None
            return (await _views(session, [row]))[0]

    async def deliveries_of_task(
        self, task_id: str, account_id: str | None = None
    ) -> list[DeliveryView]:
        """A task's deliveries with every attempt, oldest first; with `account_id`, only
        if the task is that account's (the customer API and the dashboard ask this way)."""
        query = select(WebhookDelivery).where(WebhookDelivery.task_id == task_id)
        if account_id is not None:
            query = query.where(WebhookDelivery.account_id == account_id)
        async with self._reads() as session:
            rows = list((await session.scalars(query.order_by(WebhookDelivery.created_at))).all())
            return await _views(session, rows)


def _secret_view(row: WebhookSecret) -> SecretView:
    return SecretView(
        account_id=row.account_id,
        secret=row.secret,
        previous_secret=row.previous_secret,
        previous_valid_until=row.previous_valid_until,
        rotated_at=row.rotated_at,
        kie_hmac_key=row.kie_hmac_key,
    )


async def _views(session: AsyncSession, rows: Sequence[WebhookDelivery]) -> list[DeliveryView]:
    if not rows:
        return []
    attempts = (
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([row.id for row in rows]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
    ).all()
    by_delivery: dict[str, list[AttemptView]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(
            AttemptView(
                number=attempt.number,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                status=attempt.status,
                error=attempt.error,
                outcome=attempt.outcome,
            )
        )
    return [
        DeliveryView(
            id=row.id,
            task_id=row.task_id,
            account_id=row.account_id,
            callback_url=row.callback_url,
            state=row.state,
            attempts=row.attempts,
            last_status=row.last_status,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            completed_at=row.completed_at,
            attempt_log=tuple(by_delivery.get(row.id, ())),
        )
        for row in rows
    ]
