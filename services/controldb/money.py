"""Every change to what an account may spend: credits, admission (reservations), settlement
and tiers. Each public method is one transaction.

The guarantee that caps hold under any concurrency rests on three rules:
- admission reads balance, caps, settled spend and live reservations and inserts its own
  reservation in one transaction that holds the account's row lock (PostgreSQL
  `SELECT … FOR UPDATE`; SQLite serialises every write transaction with BEGIN IMMEDIATE);
- settlement takes the same row lock (it updates the balance) before it moves a
  reservation into settled spend, so admission never sees a half-settled call;
- the router never bills a call more than its reservation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.money import NANO_PER_USD, apply_markup
from controldb.ids import random_id
from controldb.models import (
    Account,
    ApiKey,
    CreditEntry,
    Reservation,
    Settlement,
    SpendCounter,
    Workspace,
)
from controldb.tiers import Tier, tier_for

DEFAULT_RESERVATION_TTL = timedelta(minutes=15)
REFUND_WINDOW = timedelta(days=30)
# Purchases of exactly these packages carry a bonus, in basis points of the amount.
PACKAGE_BONUS_BASIS_POINTS = {
    10 * NANO_PER_USD: 500,
    50 * NANO_PER_USD: 800,
    200 * NANO_PER_USD: 1200,
}
CREDIT_KINDS = ("purchase", "grant", "refund")


class MoneyError(Exception):
    pass


class UnknownAccount(MoneyError):
    pass


class RefundNotAllowed(MoneyError):
    def __init__(self, requested: int, refundable: int) -> None:
        super().__init__(
            f"refund of {requested} nano-USD exceeds the {refundable} nano-USD of unspent "
            "credits purchased in the last 30 days"
        )
        self.refundable = refundable


@dataclass(frozen=True, slots=True)
class LimitExceeded(Exception):
    """A call that would break a cap or overdraw the balance; becomes HTTP 402."""

    code: str  # key_daily_cap, …, insufficient_credits
    limit_nano_usd: int
    spent_nano_usd: int
    reserved_nano_usd: int
    needed_nano_usd: int
    resets_at: datetime | None


@dataclass(frozen=True, slots=True)
class Admission:
    reservation_id: str
    amount_nano_usd: int
    markup_basis_points: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UsageSettlement:
    event_id: str
    account_id: str
    key_id: str
    workspace_id: str | None
    reservation_id: str | None
    billed_nano_usd: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    cap_nano_usd: int | None
    spent_nano_usd: int
    reserved_nano_usd: int
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class ScopeSpend:
    daily: PeriodSpend
    monthly: PeriodSpend


@dataclass(slots=True)
class CreditResult:
    entries: list[CreditEntry] = field(default_factory=list)
    balance_nano_usd: int = 0


def day_period(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def month_period(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_day(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def next_month(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=32)).replace(day=1)


def _counter_upsert(
    session: AsyncSession, scope: str, scope_id: str, period: str, amount: int
) -> Any:
    """INSERT … ON CONFLICT DO UPDATE, in the session's dialect (PostgreSQL or SQLite)."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(SpendCounter).values(
        scope=scope, scope_id=scope_id, period=period, spent_nano_usd=amount
    )
    return statement.on_conflict_do_update(
        index_elements=["scope", "scope_id", "period"],
        set_={"spent_nano_usd": SpendCounter.spent_nano_usd + amount},
    )


class Money:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
    ) -> None:
        self._sessions = sessions
        self._reservation_ttl = reservation_ttl

    # -- credits -------------------------------------------------------------------------

    async def add_credits(
        self, account_id: str, kind: str, amount_nano_usd: int, *, note: str = ""
    ) -> CreditResult:
        if kind not in CREDIT_KINDS:
            raise ValueError(f"kind must be one of {CREDIT_KINDS}")
        if amount_nano_usd <= 0:
            raise ValueError("the amount must be positive")
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            account = await self._locked_account(session, account_id)
            result = CreditResult()
            if kind == "refund":
                refundable = await self._refundable(session, account, now)
                if amount_nano_usd > refundable:
                    raise RefundNotAllowed(amount_nano_usd, refundable)
                result.entries.append(self._entry(account_id, "refund", -amount_nano_usd, note))
            else:
                result.entries.append(self._entry(account_id, kind, amount_nano_usd, note))
                bonus_bp = (
                    PACKAGE_BONUS_BASIS_POINTS.get(amount_nano_usd) if kind == "purchase" else None
                )
                if bonus_bp:
                    bonus = amount_nano_usd * bonus_bp // 10_000
                    result.entries.append(self._entry(account_id, "bonus", bonus, "package bonus"))
            delta = sum(entry.amount_nano_usd for entry in result.entries)
            session.add_all(result.entries)
            account.balance_nano_usd += delta
            result.balance_nano_usd = account.balance_nano_usd
        return result

    @staticmethod
    def _entry(account_id: str, kind: str, amount: int, note: str) -> CreditEntry:
        return CreditEntry(
            id=random_id("cred_"),
            account_id=account_id,
            kind=kind,
            amount_nano_usd=amount,
            note=note[:200],
            created_at=datetime.now(UTC),
        )

    async def _refundable(self, session: AsyncSession, account: Account, now: datetime) -> int:
        recent = await session.scalar(
            select(func.coalesce(func.sum(CreditEntry.amount_nano_usd), 0)).where(
                CreditEntry.account_id == account.id,
                CreditEntry.kind.in_(("purchase", "refund")),
                CreditEntry.created_at > now - REFUND_WINDOW,
            )
        )
        return max(0, min(int(recent or 0), account.balance_nano_usd))

    # -- admission -----------------------------------------------------------------------

    async def admit(
        self, account_id: str, key_id: str, upstream_worst_case_nano_usd: int
    ) -> Admission:
        """Reserves the call's worst-case cost against the balance and every cap, or raises
        LimitExceeded. One transaction, under the account's row lock."""
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            account = await self._locked_account(session, account_id)
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise UnknownAccount(f"no key {key_id}")
            workspace = await session.get(Workspace, key.workspace_id) if key.workspace_id else None
            await session.execute(
                delete(Reservation).where(
                    Reservation.account_id == account_id, Reservation.expires_at <= now
                )
            )
            reserved = await self._reserved(session, account_id, key_id, key.workspace_id)
            spent = await self._spent(session, now, account_id, key_id, key.workspace_id)
            needed = apply_markup(upstream_worst_case_nano_usd, account.markup_basis_points)

            day, month = day_period(now), month_period(now)
            scopes: list[tuple[str, str, object]] = [("key", key_id, key)]
            if workspace is not None:
                scopes.append(("workspace", workspace.id, workspace))
            scopes.append(("account", account_id, account))
            for scope, scope_id, holder in scopes:
                for period, period_key, resets_at in (
                    ("daily", day, next_day(now)),
                    ("monthly", month, next_month(now)),
                ):
                    cap = getattr(holder, f"{period}_cap_nano_usd")
                    if cap is None:
                        continue
                    used = spent.get((scope, scope_id, period_key), 0)
                    held = reserved[scope]
                    if used + held + needed > cap:
                        raise LimitExceeded(
                            code=f"{scope}_{period}_cap",
                            limit_nano_usd=cap,
                            spent_nano_usd=used,
                            reserved_nano_usd=held,
                            needed_nano_usd=needed,
                            resets_at=resets_at,
                        )
            if reserved["account"] + needed > account.balance_nano_usd:
                raise LimitExceeded(
                    code="insufficient_credits",
                    limit_nano_usd=account.balance_nano_usd,
                    spent_nano_usd=0,
                    reserved_nano_usd=reserved["account"],
                    needed_nano_usd=needed,
                    resets_at=None,
                )
            reservation = Reservation(
                id=random_id("resv_"),
                account_id=account_id,
                key_id=key_id,
                workspace_id=key.workspace_id,
                amount_nano_usd=needed,
                created_at=now,
                expires_at=now + self._reservation_ttl,
            )
            session.add(reservation)
        return Admission(
            reservation_id=reservation.id,
            amount_nano_usd=needed,
            markup_basis_points=account.markup_basis_points,
            expires_at=reservation.expires_at,
        )

    async def release(self, reservation_id: str) -> None:
        """Drops a reservation whose call never reached the router (nothing to settle)."""
        async with self._sessions() as session, session.begin():
            await session.execute(delete(Reservation).where(Reservation.id == reservation_id))

    @staticmethod
    async def _locked_account(session: AsyncSession, account_id: str) -> Account:
        account = await session.scalar(
            select(Account).where(Account.id == account_id).with_for_update()
        )
        if account is None:
            raise UnknownAccount(f"no account {account_id}")
        return account

    @staticmethod
    async def _reserved(
        session: AsyncSession, account_id: str, key_id: str, workspace_id: str | None
    ) -> dict[str, int]:
        amount = Reservation.amount_nano_usd
        row = (
            await session.execute(
                select(
                    func.coalesce(func.sum(amount), 0),
                    func.coalesce(
                        func.sum(case((Reservation.key_id == key_id, amount), else_=0)), 0
                    ),
                    func.coalesce(
                        func.sum(case((Reservation.workspace_id == workspace_id, amount), else_=0)),
                        0,
                    ),
                ).where(Reservation.account_id == account_id)
            )
        ).one()
        return {"account": int(row[0]), "key": int(row[1]), "workspace": int(row[2])}

    @staticmethod
    async def _spent(
        session: AsyncSession,
        now: datetime,
        account_id: str,
        key_id: str,
        workspace_id: str | None,
    ) -> dict[tuple[str, str, str], int]:
        scopes = [("key", key_id), ("account", account_id)]
        if workspace_id:
            scopes.append(("workspace", workspace_id))
        rows = await session.execute(
            select(
                SpendCounter.scope,
                SpendCounter.scope_id,
                SpendCounter.period,
                SpendCounter.spent_nano_usd,
            ).where(
                tuple_(SpendCounter.scope, SpendCounter.scope_id).in_(scopes),
                SpendCounter.period.in_((day_period(now), month_period(now))),
            )
        )
        return {(scope, scope_id, period): int(spent) for scope, scope_id, period, spent in rows}

    # -- settlement ----------------------------------------------------------------------

    async def settle(self, items: Sequence[UsageSettlement]) -> int:
        """Applies usage events once each: balance debit, spend counters, reservation release.

        Returns how many were new. Events already settled (redelivery) change nothing.
        """
        if not items:
            return 0
        async with self._sessions() as session, session.begin():
            ids = [item.event_id for item in items]
            seen = set(
                (
                    await session.scalars(
                        select(Settlement.event_id).where(Settlement.event_id.in_(ids))
                    )
                ).all()
            )
            fresh: dict[str, UsageSettlement] = {}
            for item in items:
                if item.event_id not in seen:
                    fresh.setdefault(item.event_id, item)
            debits: dict[str, int] = {}
            counters: dict[tuple[str, str, str], int] = {}
            for item in fresh.values():
                if item.billed_nano_usd > 0:
                    debits[item.account_id] = debits.get(item.account_id, 0) + item.billed_nano_usd
                    for scope, scope_id in self._scopes(item):
                        for period in (
                            day_period(item.occurred_at),
                            month_period(item.occurred_at),
                        ):
                            slot = (scope, scope_id, period)
                            counters[slot] = counters.get(slot, 0) + item.billed_nano_usd
            # The account row lock first, in a fixed order, as admission takes it.
            for account_id in sorted(debits):
                await session.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(balance_nano_usd=Account.balance_nano_usd - debits[account_id])
                )
            for (scope, scope_id, period), amount in sorted(counters.items()):
                await session.execute(_counter_upsert(session, scope, scope_id, period, amount))
            reservation_ids = [item.reservation_id for item in items if item.reservation_id]
            if reservation_ids:
                await session.execute(
                    delete(Reservation).where(Reservation.id.in_(reservation_ids))
                )
            now = datetime.now(UTC)
            session.add_all(
                Settlement(
                    event_id=item.event_id,
                    account_id=item.account_id,
                    billed_nano_usd=item.billed_nano_usd,
                    occurred_at=item.occurred_at,
                    settled_at=now,
                )
                for item in fresh.values()
            )
        return len(fresh)

    @staticmethod
    def _scopes(item: UsageSettlement) -> Iterable[tuple[str, str]]:
        yield ("key", item.key_id)
        yield ("account", item.account_id)
        if item.workspace_id:
            yield ("workspace", item.workspace_id)

    # -- tiers ---------------------------------------------------------------------------

    async def apply_tiers(
        self, spend_by_account: dict[str, int], computed_at: datetime
    ) -> dict[str, Tier]:
        """Sets every account's tier from its rolling 30-day spend (absent = no spend)."""
        applied: dict[str, Tier] = {}
        async with self._sessions() as session, session.begin():
            accounts = (await session.scalars(select(Account))).all()
            for account in accounts:
                spend = spend_by_account.get(account.id, 0)
                tier = tier_for(spend)
                account.tier = tier.name
                account.markup_basis_points = tier.markup_basis_points
                account.rolling_30d_spend_nano_usd = spend
                account.tier_computed_at = computed_at
                applied[account.id] = tier
        return applied

    # -- reading -------------------------------------------------------------------------

    async def scope_spend(
        self, scope: str, scope_id: str, caps: tuple[int | None, int | None]
    ) -> ScopeSpend:
        now = datetime.now(UTC)
        column = {
            "key": Reservation.key_id,
            "workspace": Reservation.workspace_id,
            "account": Reservation.account_id,
        }[scope]
        async with self._sessions() as session:
            rows = await session.execute(
                select(SpendCounter.period, SpendCounter.spent_nano_usd).where(
                    SpendCounter.scope == scope,
                    SpendCounter.scope_id == scope_id,
                    SpendCounter.period.in_((day_period(now), month_period(now))),
                )
            )
            spent = {period: int(amount) for period, amount in rows}
            reserved = int(
                await session.scalar(
                    select(func.coalesce(func.sum(Reservation.amount_nano_usd), 0)).where(
                        column == scope_id, Reservation.expires_at > now
                    )
                )
                or 0
            )
        return ScopeSpend(
            daily=PeriodSpend(caps[0], int(spent.get(day_period(now), 0)), reserved, next_day(now)),
            monthly=PeriodSpend(
                caps[1], int(spent.get(month_period(now), 0)), reserved, next_month(now)
            ),
        )
