"""Stored /v1/responses calls, always read and deleted within one account.

A row is written once, after the call finished; nothing updates it. Reads and deletes
name the account, so another account's response id answers exactly like an unknown one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controldb.models import StoredResponse

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    id: str
    stored: bool
    response: Item
    input_items: list[Item]
    context_items: list[Item]

    def output_item(self, item_id: str) -> Item | None:
        return next((i for i in self.response.get("output", []) if i.get("id") == item_id), None)

    def conversation(self) -> list[Item]:
        """What a follow-up (`previous_response_id` = this id) continues: everything the
        model saw, then what it answered."""
        return [*self.context_items, *self.input_items, *self.response.get("output", [])]


class ResponseStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def save(
        self,
        account_id: str,
        response: Item,
        input_items: list[Item],
        context_items: list[Item],
    ) -> None:
        """Keeps a finished response; with `store: false`, only that it existed."""
        stored = bool(response.get("store", True))
        row = StoredResponse(
            id=response["id"],
            account_id=account_id,
            stored=stored,
            response=orjson.dumps(response).decode() if stored else "",
            input_items=orjson.dumps(input_items).decode() if stored else "[]",
            context_items=orjson.dumps(context_items).decode() if stored else "[]",
        )
        async with self._sessions() as session, session.begin():
            session.add(row)

    async def get(self, account_id: str, response_id: str) -> ResponseRecord | None:
        if "\x00" in response_id:
            # An id from a client's body (`previous_response_id`, an `item_reference`): ours
            # never hold a NUL, and PostgreSQL would refuse the query instead of finding none.
            return None
        async with self._sessions() as session:
            row = await session.scalar(
                select(StoredResponse).where(
                    StoredResponse.id == response_id, StoredResponse.account_id == account_id
                )
            )
        if row is None:
            return None
        return ResponseRecord(
            id=row.id,
            stored=row.stored,
            response=orjson.loads(row.response) if row.stored else {},
            input_items=orjson.loads(row.input_items),
            context_items=orjson.loads(row.context_items),
        )

    async def delete(self, account_id: str, response_id: str) -> bool:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                delete(StoredResponse).where(
                    StoredResponse.id == response_id,
                    StoredResponse.account_id == account_id,
                    StoredResponse.stored.is_(True),
                )
            )
        return bool(getattr(result, "rowcount", 0))
