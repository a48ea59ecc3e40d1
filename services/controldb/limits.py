"""Workspaces and spend caps: what operators configure; admission enforces it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controldb.ids import random_id
from controldb.models import Account, ApiKey, Workspace

CAP_FIELDS = ("daily_cap_nano_usd", "monthly_cap_nano_usd")
# What else a key's owner may set on it: its request rate (controldb.ratelimit).
KEY_FIELDS = (*CAP_FIELDS, "rpm_limit")


class NotFound(Exception):
    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"No {kind} with id '{object_id}'")
        self.kind = kind
        self.object_id = object_id


class WorkspaceMismatch(Exception):
    pass


_MODELS: dict[str, type[Account] | type[ApiKey] | type[Workspace]] = {
    "account": Account,
    "key": ApiKey,
    "workspace": Workspace,
}


class Limits:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_workspace(
        self,
        account_id: str,
        name: str,
        caps: Mapping[str, int | None],
    ) -> Workspace:
        async with self._sessions() as session, session.begin():
            if await session.get(Account, account_id) is None:
                raise NotFound("account", account_id)
            workspace = Workspace(
                id=random_id("ws_"),
                account_id=account_id,
                name=name,
                created_at=datetime.now(UTC),
                **{field: caps.get(field) for field in CAP_FIELDS},
            )
            session.add(workspace)
        return workspace

    async def get(self, kind: str, object_id: str) -> Account | ApiKey | Workspace:
        async with self._sessions() as session:
            found: Account | ApiKey | Workspace | None = await session.get(_MODELS[kind], object_id)
        if found is None:
            raise NotFound(kind, object_id)
        return found

    async def list_workspaces(self, account_id: str) -> list[Workspace]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Workspace)
                .where(Workspace.account_id == account_id)
                .order_by(Workspace.created_at)
            )
            return list(rows)

    async def set_caps(
        self, kind: str, object_id: str, changes: Mapping[str, int | None]
    ) -> Account | ApiKey | Workspace:
        """Sets (or, with None, removes) caps, and a key's rpm_limit; the very next admission
        reads them."""
        settable = KEY_FIELDS if kind == "key" else CAP_FIELDS
        async with self._sessions() as session, session.begin():
            found: Account | ApiKey | Workspace | None = await session.get(
                _MODELS[kind], object_id, with_for_update=True
            )
            if found is None:
                raise NotFound(kind, object_id)
            for name, value in changes.items():
                if name in settable:
                    setattr(found, name, value)
        return found

    async def attach_key(self, key_id: str, workspace_id: str | None) -> None:
        """Puts a new key in a workspace of its own account."""
        async with self._sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key is None:
                raise NotFound("key", key_id)
            if workspace_id is not None:
                workspace = await session.get(Workspace, workspace_id)
                if workspace is None:
                    raise NotFound("workspace", workspace_id)
                if workspace.account_id != key.account_id:
                    raise WorkspaceMismatch(
                        f"workspace '{workspace_id}' belongs to another account"
                    )
            key.workspace_id = workspace_id
