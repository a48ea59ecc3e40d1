"""Async media tasks in the control DB: creating, reading, listing and moving them on.

The edge creates a task (in the same transaction that stretches its reservation to the
model's deadline); the jobs service claims its submission once, then moves it through
Kie's states with conditional updates, so a redelivered event or a second jobs process
never records one change twice. `task_record` renders a task exactly as
`GET /v1/jobs/recordInfo` returns it in `data`: the edge serves it, and the jobs service
puts the same thing in every `TaskEvent.record` for the webhooks service to POST.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aig_common.ids import uuid7
from aig_common.money import usd
from controldb.engine import reader_of
from controldb.models import Reservation, Task

WAITING, QUEUING, GENERATING, SUCCESS, FAIL = "waiting", "queuing", "generating", "success", "fail"
STATES = (WAITING, QUEUING, GENERATING, SUCCESS, FAIL)
IN_FLIGHT = (WAITING, QUEUING, GENERATING)
TERMINAL = (SUCCESS, FAIL)
MAX_LIST_LIMIT = 100


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_task_id() -> str:
    """`task_` + a UUIDv7 in hex: ids sort by creation time, which `after` paging uses."""
    return "task_" + uuid7().hex


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: Sequence[Task]
    has_more: bool


class TaskStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._reads = reader_of(sessions)

    async def create(self, task: Task, reservation_expires_at: datetime) -> Task:
        """Stores a new task and holds its reservation until `reservation_expires_at` (the
        model's deadline plus settlement slack), in one transaction. With an Idempotency-Key
        already used by the account, returns that task instead (the caller compares
        bodies: `IdempotencyConflict` when they differ)."""
        try:
            async with self._sessions() as session, session.begin():
                session.add(task)
                await session.execute(
                    update(Reservation)
                    .where(Reservation.id == task.reservation_id)
                    .values(expires_at=reservation_expires_at)
                )
            return task
        except IntegrityError:
            if task.idempotency_key is None:
                raise
            existing = await self.by_idempotency_key(task.account_id, task.idempotency_key)
            if existing is None:
                raise
            if existing.body_sha256 != task.body_sha256:
                raise IdempotencyConflict(task.idempotency_key) from None
            return existing

    async def by_idempotency_key(self, account_id: str, key: str) -> Task | None:
        async with self._reads() as session:
            return await session.scalar(
                select(Task).where(Task.account_id == account_id, Task.idempotency_key == key)
            )

    async def get(self, task_id: str) -> Task | None:
        async with self._reads() as session:
            return await session.get(Task, task_id)

    async def get_owned(self, account_id: str, task_id: str) -> Task | None:
        """The task if it belongs to the account; None otherwise (another account's task is
        indistinguishable from a missing one)."""
        task = await self.get(task_id)
        return task if task is not None and task.account_id == account_id else None

    async def list_owned(
        self,
        account_id: str,
        *,
        state: str | None = None,
        model: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> TaskPage:
        """Newest first; `after` is the last task id of the previous page."""
        query = select(Task).where(Task.account_id == account_id)
        if state:
            query = query.where(Task.state == state)
        if model:
            query = query.where(Task.model == model)
        if after:
            query = query.where(Task.id < after)
        query = query.order_by(Task.id.desc()).limit(limit + 1)
        async with self._reads() as session:
            rows = list((await session.scalars(query)).all())
        return TaskPage(rows[:limit], len(rows) > limit)

    async def claim_submission(self, task_id: str) -> bool:
        """True for exactly one caller per task: the one that may submit it upstream."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Task)
                .where(Task.id == task_id, Task.submit_claimed_at_ms.is_(None))
                .values(submit_claimed_at_ms=now_ms())
            )
        return bool(getattr(result, "rowcount", 0))

    async def move(self, task_id: str, expected: Sequence[str], **values: Any) -> Task | None:
        """Applies `values` only if the task is still in one of `expected` states; returns
        the updated task, or None when someone else moved it first."""
        values.setdefault("update_time_ms", now_ms())
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Task)
                .where(Task.id == task_id, Task.state.in_(tuple(expected)))
                .values(**values)
            )
            if not getattr(result, "rowcount", 0):
                return None
        return await self.get(task_id)

    async def renew_leases(self, owner: str, task_ids: Sequence[str], until_ms: int) -> None:
        """`owner` follows these tasks until `until_ms` (one statement for all of them)."""
        if not task_ids:
            return
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Task)
                .where(Task.id.in_(tuple(task_ids)), Task.state.in_(IN_FLIGHT))
                .values(followed_by=owner, followed_until_ms=until_ms)
            )

    async def release_leases(self, owner: str, task_ids: Sequence[str]) -> None:
        """`owner` stops following these tasks (a graceful stop): another replica may adopt
        them at its next sweep instead of after the lease."""
        if not task_ids:
            return
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Task)
                .where(Task.id.in_(tuple(task_ids)), Task.followed_by == owner)
                .values(followed_until_ms=0)
            )

    async def adopt(
        self, owner: str, until_ms: int, *, at_start: bool = False, limit: int = 500
    ) -> list[str]:
        """Takes the lease of tasks in flight that nobody follows any more (their lease ran
        out or was released) and returns their ids; each is adopted by one replica only.
        `at_start` also takes tasks never leased (created while no jobs ran, or before
        leases existed) and this owner's own (its previous life, restarted)."""
        now = now_ms()
        unfollowed: ColumnElement[bool] = Task.followed_until_ms < now
        if at_start:
            never = Task.followed_until_ms.is_(None)
            unfollowed = or_(unfollowed, never, Task.followed_by == owner)
        async with self._reads() as session:
            candidates = (
                await session.scalars(
                    select(Task.id)
                    .where(Task.state.in_(IN_FLIGHT), unfollowed)
                    .order_by(Task.id)
                    .limit(limit)
                )
            ).all()
        if not candidates:
            return []
        async with self._sessions() as session, session.begin():
            # The same condition again, in the UPDATE: of two replicas adopting at once, the
            # second finds the lease already renewed and takes nothing.
            adopted = await session.scalars(
                update(Task)
                .where(Task.id.in_(tuple(candidates)), Task.state.in_(IN_FLIGHT), unfollowed)
                .values(followed_by=owner, followed_until_ms=until_ms)
                .returning(Task.id)
                .execution_options(synchronize_session=False)
            )
            return sorted(adopted.all())


def result_keys(task: Task) -> list[str]:
    return [str(key) for key in orjson.loads(task.result_keys or "[]")]


def task_record(
    task: Task, result_urls: Sequence[str], callback: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The task as Kie's recordInfo `data`: `param` and `resultJson` are JSON *strings*,
    times are Unix milliseconds, failCode/failMsg are "" unless it failed. aig adds
    `costUsd` (billed, decimal USD) and `callback` (delivery state, null without a URL)."""
    done = task.complete_time_ms
    return {
        "taskId": task.id,
        "model": task.model,
        "state": task.state,
        "param": task.param,
        "resultJson": (
            orjson.dumps({"resultUrls": list(result_urls)}).decode()
            if task.state == SUCCESS
            else ""
        ),
        "failCode": task.fail_code if task.state == FAIL else "",
        "failMsg": task.fail_msg if task.state == FAIL else "",
        "costTime": (done - task.create_time_ms) if done else 0,
        "createTime": task.create_time_ms,
        "updateTime": task.update_time_ms,
        "completeTime": done,
        "costUsd": usd(task.billed_nano_usd),
        "callback": callback if callback is not None else default_callback(task),
    }


def default_callback(task: Task) -> dict[str, Any] | None:
    """Delivery state before the webhooks service has recorded any attempt."""
    if not task.callback_url:
        return None
    return {"state": "pending", "attempts": 0, "lastStatus": None, "nextAttemptAt": None}


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
