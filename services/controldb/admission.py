"""The admission rule: may this call reserve its worst case, given the balance, every cap,
settled spend and live reservations? One query reads all of it (LIMITS_QUERY) and one pure
function decides (decide_admission; decide_admissions for several reservations from one
read), so every admission path — a transaction per call (controldb.money), SQLite's group
commit (controldb.group_commit) and PostgreSQL's (controldb.postgres_admission) — decides
alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    bindparam,
    case,
    cast,
    func,
    select,
    true,
    update,
)

from aig_common.money import apply_markup
from controldb.ids import random_id
from controldb.models import Account, ApiKey, Reservation, SpendCounter, Workspace
from controldb.periods import day_period, month_period, next_day, next_month
from controldb.ratelimit import RateStatus, take

# What time it is, as money sees it (UTC). Production reads the wall clock; tests pass a fake
# to put a call on either side of a UTC midnight or of the refund window's edge.
Clock = Callable[[], datetime]
# Test seam, None in production: called with how many admissions a transaction has just
# committed, before any of them is answered. It may block (on whatever thread commits), so a
# test can cancel the callers at exactly that point.
AdmissionsCommitted = Callable[[int], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MoneyError(Exception):
    pass


class UnknownAccount(MoneyError):
    pass


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
    # The key's request rate after this call, when the key has an rpm_limit.
    rate: RateStatus | None = None
    # What the tightest of the balance and the caps has left once this call is held: how
    # much more could be admitted right now. The edge reserves ahead only with room to spare.
    headroom_nano_usd: int = 0


def nano_usd_sum(column: Any) -> ColumnElement[int]:
    """SUM of a nano-USD column, 0 when no rows match, as BIGINT on every backend.

    PostgreSQL's sum() over BIGINT is NUMERIC, which asyncpg hands back as a Decimal; the
    cast keeps every amount read from the database a Python int (SQLite already is)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)


_ACCOUNT: Any = bindparam("account_id", type_=String())
_KEY: Any = bindparam("key_id", type_=String())
_NOW: Any = bindparam("now", type_=Reservation.expires_at.type)
_DAY: Any = bindparam("day", type_=String())
_MONTH: Any = bindparam("month", type_=String())


def _expired() -> Any:
    """What the account's expired reservations not yet purged hold: in all, by this key, by
    the key's workspace. The running totals (`held_nano_usd`, kept by triggers: migration
    0010) count every reservation row, so these are taken off to count live ones only; a
    reservation stops counting at its expiry, as before. They are the oldest rows of the
    account's range of the covering index, so the scan reads only them: none at all unless
    a router died with calls in flight and billing has not purged them yet."""
    amount = Reservation.amount_nano_usd
    key_workspace = select(ApiKey.workspace_id).where(ApiKey.id == _KEY).scalar_subquery()
    return (
        select(
            nano_usd_sum(amount).label("account"),
            nano_usd_sum(case((Reservation.key_id == _KEY, amount), else_=0)).label("key"),
            nano_usd_sum(case((Reservation.workspace_id == key_workspace, amount), else_=0)).label(
                "workspace"
            ),
        )
        .where(Reservation.account_id == _ACCOUNT, Reservation.expires_at <= _NOW)
        .subquery("expired")
    )


def _spent(scope: str, scope_id: Any, period: Any) -> Any:
    spent = select(SpendCounter.spent_nano_usd).where(
        SpendCounter.scope == scope,
        SpendCounter.scope_id == scope_id,
        SpendCounter.period == period,
    )
    return cast(func.coalesce(spent.scalar_subquery(), 0), BigInteger)


def _build_limits_query() -> Any:
    """Balance, markup, every cap, settled spend and what live reservations hold, in one
    statement.

    Built once with bound parameters: constructing it per call cost more than running it.
    """
    workspace_id = ApiKey.workspace_id
    expired = _expired()
    return (
        select(
            Account.balance_nano_usd.label("balance"),
            Account.markup_basis_points.label("markup"),
            Account.daily_cap_nano_usd.label("account_daily_cap"),
            Account.monthly_cap_nano_usd.label("account_monthly_cap"),
            workspace_id.label("workspace_id"),
            ApiKey.daily_cap_nano_usd.label("key_daily_cap"),
            ApiKey.monthly_cap_nano_usd.label("key_monthly_cap"),
            ApiKey.rpm_limit.label("rpm_limit"),
            ApiKey.rpm_minute.label("rpm_minute"),
            ApiKey.rpm_current.label("rpm_current"),
            ApiKey.rpm_previous.label("rpm_previous"),
            Workspace.daily_cap_nano_usd.label("workspace_daily_cap"),
            Workspace.monthly_cap_nano_usd.label("workspace_monthly_cap"),
            (Account.held_nano_usd - expired.c.account).label("held_account"),
            (ApiKey.held_nano_usd - expired.c.key).label("held_key"),
            (func.coalesce(Workspace.held_nano_usd, 0) - expired.c.workspace).label(
                "held_workspace"
            ),
            _spent("key", _KEY, _DAY).label("key_daily_spent"),
            _spent("key", _KEY, _MONTH).label("key_monthly_spent"),
            _spent("account", _ACCOUNT, _DAY).label("account_daily_spent"),
            _spent("account", _ACCOUNT, _MONTH).label("account_monthly_spent"),
            _spent("workspace", workspace_id, _DAY).label("workspace_daily_spent"),
            _spent("workspace", workspace_id, _MONTH).label("workspace_monthly_spent"),
        )
        .select_from(Account)
        .join(ApiKey, (ApiKey.id == _KEY) & (ApiKey.account_id == Account.id))
        .outerjoin(Workspace, Workspace.id == workspace_id)
        .join(expired, true())
        .where(Account.id == _ACCOUNT)
    )


LIMITS_QUERY = _build_limits_query()
LOCK_ACCOUNT = select(Account.id).where(Account.id == _ACCOUNT).with_for_update()
# The one extra statement, only for keys with an rpm_limit: the counts after an admitted call.
# Absolute values, computed from what LIMITS_QUERY read under the same lock.
COUNT_REQUEST = (
    update(ApiKey)
    .where(ApiKey.id == bindparam("window_key_id", type_=String()))
    .values(
        rpm_minute=bindparam("window_minute"),
        rpm_current=bindparam("window_current"),
        rpm_previous=bindparam("window_previous"),
    )
)


def limits_parameters(account_id: str, key_id: str, now: datetime) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "key_id": key_id,
        "now": now,
        "day": day_period(now),
        "month": month_period(now),
    }


class LimitsRow(Protocol):
    """LIMITS_QUERY's row as decide_admission reads it. Every amount is an int: the query
    casts its sums to BIGINT (see nano_usd_sum)."""

    balance: int
    markup: int
    workspace_id: str | None
    held_account: int
    rpm_limit: int | None
    rpm_minute: int | None
    rpm_current: int
    rpm_previous: int


class LabelledRow:
    """A row read by column label, as decide_admission reads SQLAlchemy's rows, for the
    admission paths that run compiled statements on the driver's connection. The
    columns are the instance's attributes: reading one is a plain attribute lookup, where a
    dict falling back on `__getattr__` paid a failed lookup first (half of
    decide_admission's time, which runs on every call's critical path)."""

    def __init__(self, columns: Iterable[tuple[str, Any]]) -> None:
        self.__dict__.update(columns)

    def __getattr__(self, name: str) -> Any:
        # Reached only for a column the query does not have.
        raise AttributeError(name)


@dataclass(frozen=True, slots=True)
class Decision:
    """An admitted call: the admission, the reservation row to insert and, for a key with an
    rpm_limit, COUNT_REQUEST's parameters."""

    admission: Admission
    reservation: dict[str, Any]
    request_count: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _CapCheck:
    """One cap as LIMITS_QUERY labels its columns: the cap, its settled spend, what is held."""

    cap: str  # also LimitExceeded's code: key_daily_cap, ...
    spent: str
    held: str
    daily: bool


def _cap_checks(scopes: tuple[str, ...]) -> tuple[_CapCheck, ...]:
    return tuple(
        _CapCheck(
            f"{scope}_{period}_cap",
            f"{scope}_{period}_spent",
            f"held_{scope}",
            period == "daily",
        )
        for scope in scopes
        for period in ("daily", "monthly")
    )


# Column names built once, not per call: admission runs on every call's critical path, and
# a refused call alone needs the reset time, so it is computed only then.
_CAPS = _cap_checks(("key", "account"))
_CAPS_WITH_WORKSPACE = _cap_checks(("key", "workspace", "account"))


def decide_admission(
    row: LimitsRow | None,
    account_id: str,
    key_id: str,
    upstream_worst_case_nano_usd: int,
    now: datetime,
    ttl: timedelta,
) -> Decision:
    """From LIMITS_QUERY's row: what to write for an admitted call, or RateLimited /
    LimitExceeded / UnknownAccount. Pure, so every admission path decides alike. The rate
    comes first: a runaway loop is told to slow down (429, retryable) before it is told a
    cap is spent."""
    if row is None:
        raise UnknownAccount(f"no key {key_id} in account {account_id}")
    rate, request_count = None, None
    if row.rpm_limit is not None:
        rate, window = take(row.rpm_limit, row.rpm_minute, row.rpm_current, row.rpm_previous, now)
        request_count = {
            "window_key_id": key_id,
            "window_minute": window.minute,
            "window_current": window.current,
            "window_previous": window.previous,
        }
    needed = apply_markup(upstream_worst_case_nano_usd, row.markup)
    headroom = row.balance - row.held_account - needed
    for cap_check in _CAPS_WITH_WORKSPACE if row.workspace_id else _CAPS:
        cap = getattr(row, cap_check.cap)
        if cap is None:
            continue
        used, held = getattr(row, cap_check.spent), getattr(row, cap_check.held)
        left = cap - used - held - needed
        if left < 0:
            raise LimitExceeded(
                code=cap_check.cap,
                limit_nano_usd=cap,
                spent_nano_usd=used,
                reserved_nano_usd=held,
                needed_nano_usd=needed,
                resets_at=next_day(now) if cap_check.daily else next_month(now),
            )
        if left < headroom:
            headroom = left
    if headroom < 0:  # the balance: every cap had room
        raise LimitExceeded(
            code="insufficient_credits",
            limit_nano_usd=row.balance,
            spent_nano_usd=0,
            reserved_nano_usd=row.held_account,
            needed_nano_usd=needed,
            resets_at=None,
        )
    admission = Admission(
        reservation_id=random_id("resv_"),
        amount_nano_usd=needed,
        markup_basis_points=row.markup,
        expires_at=now + ttl,
        rate=rate,
        headroom_nano_usd=headroom,
    )
    values = {
        "id": admission.reservation_id,
        "account_id": account_id,
        "key_id": key_id,
        "workspace_id": row.workspace_id,
        "amount_nano_usd": needed,
        "created_at": now,
        "expires_at": admission.expires_at,
        "shelved_until": None,
    }
    return Decision(admission, values, request_count)


# The held columns an admitted reservation adds to, as the triggers keep them (migration
# 0010): the account's, the key's and, for a key in a workspace, the workspace's.
_HELD_BY_EVERY_RESERVATION = ("held_account", "held_key")
_HELD_BY_A_WORKSPACE_KEY = ("held_account", "held_key", "held_workspace")


@dataclass(frozen=True, slots=True)
class RoomToKeep:
    """What reservations admitted ahead of a key's calls (the edge's shelves) must leave:
    room for `factor` times what would then be held ahead, `already_held` (the shelf's)
    plus those granted with it, each one itself included."""

    factor: int
    already_held: int
    # How long each may wait on its shelf for a call: its row's `shelved_until` is the
    # admission's time plus this, and the edge gives it back by then if no call took it.
    shelved_for: timedelta = timedelta(0)

    def room_for(self, admission: Admission) -> int:
        """How many reservations of `admission`'s amount may be held ahead beside
        `already_held` (maybe none, or fewer than none): the room it left, over `factor`
        times the amount (a free model's amount counted as one nano-USD)."""
        share = self.factor * max(1, admission.amount_nano_usd)
        return admission.headroom_nano_usd // share - self.already_held

    def kept_by(self, admission: Admission, held_with_it: int) -> bool:
        """Whether `admission` leaves room for `factor` times the amount of what would then
        be held ahead: `already_held` plus `held_with_it` (itself included)."""
        return held_with_it <= self.room_for(admission)


def decide_admissions(
    columns: Mapping[str, Any] | None,
    account_id: str,
    key_id: str,
    upstream_worst_case_nano_usd: int,
    now: datetime,
    ttl: timedelta,
    count: int,
    ahead: RoomToKeep | None = None,
) -> list[Decision]:
    """Up to `count` reservations of one worst case from one LIMITS_QUERY row (as a mapping
    of its columns), decided exactly as `count` transactions in a row under the account's
    lock would decide them: each reads what the ones before it hold, and nothing else a
    reservation's insert changes is in the row (settled spend, the balance and expired
    reservations stay as they were). The first refusal ends the list; a refusal of the
    first raises, as decide_admission does. A key with an rpm_limit gets one: each of its
    calls is counted as it comes.

    Reserving `ahead` of calls, a reservation is granted only while it leaves the room that
    RoomToKeep asks for. So a refill never holds, even for a moment, room it would at once
    give back, which another edge's call could have been refused for. None may be granted;
    none is for a key with an rpm_limit, whose calls are all counted as they come."""
    row = None if columns is None else LabelledRow(columns.items())
    decision = decide_admission(row, account_id, key_id, upstream_worst_case_nano_usd, now, ttl)
    if decision.request_count is not None:
        return [] if ahead is not None else [decision]
    assert columns is not None  # decide_admission refuses a missing row
    held = dict(columns)
    added = (
        _HELD_BY_A_WORKSPACE_KEY if held["workspace_id"] is not None else _HELD_BY_EVERY_RESERVATION
    )
    decisions: list[Decision] = []
    while True:
        if ahead is not None:
            if not ahead.kept_by(decision.admission, len(decisions) + 1):
                break
            decision.reservation["shelved_until"] = now + ahead.shelved_for
        decisions.append(decision)
        if len(decisions) >= count:
            break
        for column in added:
            held[column] += decision.admission.amount_nano_usd
        try:
            decision = decide_admission(
                LabelledRow(held.items()),
                account_id,
                key_id,
                upstream_worst_case_nano_usd,
                now,
                ttl,
            )
        except LimitExceeded:
            break
    return decisions
