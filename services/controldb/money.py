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

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aig_common.money import MAX_NANO_USD, NANO_PER_USD
from controldb.admission import (
    COUNT_REQUEST,
    LIMITS_QUERY,
    LOCK_ACCOUNT,
    Admission,
    AdmissionsCommitted,
    Clock,
    MoneyError,
    RoomToKeep,
    UnknownAccount,
    decide_admissions,
    limits_parameters,
    nano_usd_sum,
    utc_now,
)
from controldb.admission import (
    LimitExceeded as LimitExceeded,  # re-exported: callers catch it from here
)
from controldb.engine import is_sqlite_file
from controldb.group_commit import GroupCommitAdmissions
from controldb.ids import random_id
from controldb.models import (
    Account,
    CreditEntry,
    Reservation,
    SpendCounter,
)
from controldb.periods import day_period, month_period, next_day, next_month
from controldb.postgres_admission import PostgresAdmissions
from controldb.ratelimit import RateLimited as RateLimited  # re-exported, as LimitExceeded
from controldb.settlement import (
    SettlementWrites,
    SqliteSettlementStatements,
    write_with_core,
)
from controldb.settlement import (
    UsageSettlement as UsageSettlement,  # re-exported: billing builds them from here
)
from controldb.sync_writer import SyncSqliteWriter
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


class AlreadyClaimed(MoneyError):
    """The credit's claim (a trial address, a Stripe payment) was used before: nothing added."""


# Runs inside add_credits' transaction, under the account lock; False means "already done".
Claim = Callable[[AsyncSession], Awaitable[bool]]


class BalanceTooLarge(MoneyError):
    """A credit that would take the balance past what its BIGINT column holds."""


class RefundNotAllowed(MoneyError):
    def __init__(self, requested: int, refundable: int) -> None:
        super().__init__(
            f"refund of {requested} nano-USD exceeds the {refundable} nano-USD of unspent "
            "credits purchased in the last 30 days"
        )
        self.refundable = refundable


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


class Money:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
        group_commit: bool = True,
        clock: Clock = utc_now,
        admissions_committed: AdmissionsCommitted | None = None,
    ) -> None:
        """With `group_commit` (the default) on an SQLite file, admissions run inline when
        SQLite's write lock is free and otherwise on one writer thread that commits many
        per transaction (controldb.group_commit). `clock` and `admissions_committed` are
        test seams (see their types); the defaults are the production behaviour."""
        self._sessions = sessions
        self._reservation_ttl = reservation_ttl
        self._clock = clock
        self._admissions_committed = admissions_committed
        # Transactions of admissions whose caller gave up, still running to their end.
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._group_commit: GroupCommitAdmissions | None = None
        bind = sessions.kw.get("bind")
        # An SQLite file's URL: settlements run on a thread of their own (made at the first).
        self._sqlite_url: str | None = None
        self._settle_writer: SyncSqliteWriter | None = None
        if isinstance(bind, AsyncEngine) and is_sqlite_file(str(bind.url)):
            self._sqlite_url = bind.url.render_as_string(hide_password=False)
        # On PostgreSQL, admissions and releases skip the ORM (controldb.postgres_admission).
        self._postgres: PostgresAdmissions | None = None
        if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql":
            self._postgres = PostgresAdmissions(bind, reservation_ttl, clock=clock)
        if group_commit and self._sqlite_url is not None:
            self._group_commit = GroupCommitAdmissions(
                self._sqlite_url,
                reservation_ttl,
                clock=clock,
                admissions_committed=admissions_committed,
            )

    async def aclose(self) -> None:
        """Lets abandoned admissions finish and give their reservations back, then closes."""
        while self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)
        if self._group_commit is not None:
            await self._group_commit.aclose()
        if self._settle_writer is not None:
            await self._settle_writer.aclose()
            self._settle_writer = None
        if self._postgres is not None:
            await self._postgres.aclose()

    # -- credits -------------------------------------------------------------------------

    async def add_credits(
        self,
        account_id: str,
        kind: str,
        amount_nano_usd: int,
        *,
        note: str = "",
        claim: Claim | None = None,
    ) -> CreditResult:
        """With `claim`, the credit happens only if the claim succeeds in the same
        transaction (AlreadyClaimed otherwise), so a once-only credit stays once-only."""
        if kind not in CREDIT_KINDS:
            raise ValueError(f"kind must be one of {CREDIT_KINDS}")
        if amount_nano_usd <= 0:
            raise ValueError("the amount must be positive")
        now = self._clock()
        async with self._sessions() as session, session.begin():
            account = await self._locked_account(session, account_id)
            if claim is not None and not await claim(session):
                raise AlreadyClaimed(note)
            result = CreditResult()
            if kind == "refund":
                refundable = await self._refundable(session, account, now)
                if amount_nano_usd > refundable:
                    raise RefundNotAllowed(amount_nano_usd, refundable)
                result.entries.append(
                    self._entry(account_id, "refund", -amount_nano_usd, note, now)
                )
            else:
                result.entries.append(self._entry(account_id, kind, amount_nano_usd, note, now))
                bonus_bp = (
                    PACKAGE_BONUS_BASIS_POINTS.get(amount_nano_usd) if kind == "purchase" else None
                )
                if bonus_bp:
                    bonus = amount_nano_usd * bonus_bp // 10_000
                    result.entries.append(
                        self._entry(account_id, "bonus", bonus, "package bonus", now)
                    )
            delta = sum(entry.amount_nano_usd for entry in result.entries)
            if account.balance_nano_usd + delta > MAX_NANO_USD:
                raise BalanceTooLarge(
                    f"the balance would exceed {MAX_NANO_USD} nano-USD, the most it can hold"
                )
            session.add_all(result.entries)
            account.balance_nano_usd += delta
            result.balance_nano_usd = account.balance_nano_usd
        return result

    @staticmethod
    def _entry(account_id: str, kind: str, amount: int, note: str, now: datetime) -> CreditEntry:
        return CreditEntry(
            id=random_id("cred_"),
            account_id=account_id,
            kind=kind,
            amount_nano_usd=amount,
            note=note[:200],
            created_at=now,
        )

    async def _refundable(self, session: AsyncSession, account: Account, now: datetime) -> int:
        recent = await session.scalar(
            select(nano_usd_sum(CreditEntry.amount_nano_usd)).where(
                CreditEntry.account_id == account.id,
                CreditEntry.kind.in_(("purchase", "refund")),
                CreditEntry.created_at > now - REFUND_WINDOW,
            )
        )
        return max(0, min(recent or 0, account.balance_nano_usd))

    # -- admission -----------------------------------------------------------------------

    async def admit(
        self, account_id: str, key_id: str, upstream_worst_case_nano_usd: int
    ) -> Admission:
        """Reserves the call's worst-case cost against the balance and every cap, or raises
        LimitExceeded. One transaction under the account's row lock: one read of everything
        that limits the call, one insert of the reservation."""
        return (await self.admit_many(account_id, key_id, upstream_worst_case_nano_usd, 1))[0]

    async def admit_many(
        self,
        account_id: str,
        key_id: str,
        upstream_worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None = None,
    ) -> list[Admission]:
        """Up to `count` reservations of one worst case in one transaction, each decided as
        a transaction of its own would have decided it (decide_admissions): as many as the
        balance and the caps allow, at least one (without `ahead`), or the first one's
        refusal. The edge
        reserves `ahead` of a busy key's calls this way (edge.reservation_pool): then only
        while the room RoomToKeep asks for is left, and maybe none."""
        if self._group_commit is not None:
            return await self._group_commit.admit_many(
                account_id, key_id, upstream_worst_case_nano_usd, count, ahead
            )
        # The transaction runs to its end even if the caller is cancelled meanwhile (the
        # client hung up): a cancel that lands while COMMIT is in flight could not tell
        # whether the reservations were made. If the caller is gone by the end, whatever
        # was reserved is given back at once instead of holding the caps until it expires.
        transaction = asyncio.ensure_future(
            self._admit_in_transaction(
                account_id, key_id, upstream_worst_case_nano_usd, count, ahead
            )
        )
        try:
            return await asyncio.shield(transaction)
        except asyncio.CancelledError:
            self._abandoned.add(transaction)
            transaction.add_done_callback(self._abandoned.discard)
            transaction.add_done_callback(self._release_abandoned)
            raise

    async def _admit_in_transaction(
        self,
        account_id: str,
        key_id: str,
        upstream_worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None,
    ) -> list[Admission]:
        if self._postgres is not None:
            admissions = await self._postgres.admit_many(
                account_id, key_id, upstream_worst_case_nano_usd, count, ahead
            )
        else:
            admissions = await self._admit_in_session(
                account_id, key_id, upstream_worst_case_nano_usd, count, ahead
            )
        if self._admissions_committed is not None:
            await asyncio.to_thread(self._admissions_committed, len(admissions))
        return admissions

    async def _admit_in_session(
        self,
        account_id: str,
        key_id: str,
        upstream_worst_case_nano_usd: int,
        count: int,
        ahead: RoomToKeep | None,
    ) -> list[Admission]:
        """Through the ORM session: SQLite without group commit (an in-memory database,
        `group_commit=False`), or sessions not bound to one engine; the same statements and
        decision as the other two paths."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            # Core statements on the session's connection: the ORM adds nothing here but cost.
            connection = await session.connection()
            if connection.dialect.name == "postgresql":
                # The lock comes first, in its own statement: under READ COMMITTED the read
                # below then takes a snapshot that includes every reservation committed by
                # whoever held the lock before us. (SQLite's BEGIN IMMEDIATE already
                # serialises whole transactions.)
                await connection.execute(LOCK_ACCOUNT, {"account_id": account_id})
            row = (
                await connection.execute(LIMITS_QUERY, limits_parameters(account_id, key_id, now))
            ).one_or_none()
            decisions = decide_admissions(
                None if row is None else row._asdict(),
                account_id,
                key_id,
                upstream_worst_case_nano_usd,
                now,
                self._reservation_ttl,
                count,
                ahead,
            )
            if not decisions:
                return []
            if decisions[0].request_count is not None:
                await connection.execute(COUNT_REQUEST, decisions[0].request_count)
            await connection.execute(
                insert(Reservation), [decision.reservation for decision in decisions]
            )
        return [decision.admission for decision in decisions]

    def _release_abandoned(self, transaction: asyncio.Task[list[Admission]]) -> None:
        if transaction.cancelled() or transaction.exception() is not None:
            return  # nothing was reserved
        for admission in transaction.result():
            release = asyncio.ensure_future(self.release(admission.reservation_id))
            self._abandoned.add(release)
            release.add_done_callback(self._abandoned.discard)

    async def release(self, reservation_id: str) -> None:
        """Drops a reservation whose call never reached the router (nothing to settle)."""
        if self._group_commit is not None:
            await self._group_commit.release(reservation_id)
            return
        if self._postgres is not None:
            await self._postgres.release(reservation_id)
            return
        async with self._sessions() as session, session.begin():
            await session.execute(delete(Reservation).where(Reservation.id == reservation_id))

    async def shelved_until(self, account_id: str) -> datetime | None:
        """The latest `shelved_until` of the account's reservations admitted ahead of their
        calls (an edge's shelf) that are still held, None if there are none: by then each
        was taken by a call or given back. What a call refused for the room they hold waits
        for before it asks again. Rows past that time count too: one may be being given
        back right now, its release racing the refused call's transaction."""
        async with self._sessions() as session:
            return await session.scalar(
                select(func.max(Reservation.shelved_until)).where(
                    Reservation.account_id == account_id, Reservation.shelved_until.is_not(None)
                )
            )

    async def purge_expired_reservations(self) -> int:
        """Deletes reservations past their expiry (their calls were never settled: a router
        died with them in flight). Admission stopped counting them at expiry, and a late
        settlement deletes its reservation by id, a no-op once it is gone: they only took
        space. Returns how many went."""
        expired = Reservation.expires_at <= self._clock()
        async with self._sessions() as session, session.begin():
            # Deleting a reservation updates its account's running total (migration 0010's
            # triggers): the accounts are locked first, in id order, as settlement locks
            # them, so two transactions never wait for each other's rows.
            await session.execute(
                select(Account.id)
                .where(Account.id.in_(select(Reservation.account_id).where(expired)))
                .order_by(Account.id)
                .with_for_update()
            )
            result = await session.execute(delete(Reservation).where(expired))
        return int(getattr(result, "rowcount", 0) or 0)

    @staticmethod
    async def _locked_account(session: AsyncSession, account_id: str) -> Account:
        account = await session.scalar(
            select(Account).where(Account.id == account_id).with_for_update()
        )
        if account is None:
            raise UnknownAccount(f"no account {account_id}")
        return account

    # -- settlement ----------------------------------------------------------------------

    @cached_property
    def _sqlite_settlement(self) -> SqliteSettlementStatements:
        """Compiled at the first settlement on an SQLite file: the edge, which never settles,
        compiles none."""
        return SqliteSettlementStatements()

    async def settle(self, items: Sequence[UsageSettlement]) -> int:
        """Applies usage events once each: balance debit, spend counters, reservation release.

        Returns how many were new. Events already settled (redelivery) change nothing. On an
        SQLite file the transaction runs whole on a thread of its own, as precompiled
        statements on the bare connection (controldb.settlement, controldb.sync_writer), so
        SQLite's write lock, which every admission on the file needs, is held only for
        SQLite's own work.
        """
        if not items:
            return 0
        if self._sqlite_url is not None:
            if self._settle_writer is None:
                self._settle_writer = SyncSqliteWriter(self._sqlite_url)
            statements = self._sqlite_settlement
            # The common case (no event settled before) is worked out before the lock.
            planned = SettlementWrites.of(items)
            return await self._settle_writer.transaction(
                lambda connection: statements.settle(connection, items, planned, self._clock())
            )
        async with self._sessions() as session, session.begin():
            return await session.run_sync(
                lambda sync_session: write_with_core(
                    sync_session.connection(), items, self._clock()
                )
            )

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
        now = self._clock()
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
            spent: dict[str, int] = {period: amount for period, amount in rows}
            reserved = await session.scalar(
                select(nano_usd_sum(Reservation.amount_nano_usd)).where(
                    column == scope_id, Reservation.expires_at > now
                )
            )
        return ScopeSpend(
            daily=PeriodSpend(caps[0], spent.get(day_period(now), 0), reserved or 0, next_day(now)),
            monthly=PeriodSpend(
                caps[1], spent.get(month_period(now), 0), reserved or 0, next_month(now)
            ),
        )
