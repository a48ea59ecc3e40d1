"""The OpenAI Responses API (`/v1/responses`) on the chat path.

Every model runs as the chat completion `request.chat_body` builds: the same admission
(402 before any spend), the same router call with its failover and single usage event, so
a call here is billed exactly like the chat call it becomes. The router call also carries
the client's own body (`request.native_body`): a route to OpenAI passes that through to
OpenAI's Responses API untranslated, every other route gets the chat body translated to
its provider. `response` turns a chat answer back into a `response` object or the
Responses SSE events, and puts aig's ids on a passed-through one, so both look alike.
Stored responses (`store`, default true) live in the control DB per account, whichever
route served: `previous_response_id` continues from them (spelled out for the provider,
which keeps nothing), and another account's id is a 404 like an unknown one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aig.router.v1 import router_pb2 as pb
from aig_common.errors import APIError, parse_json_object
from aig_common.usage import TokenUsage
from catalog.live import LiveCatalog
from catalog.models import Catalog
from controldb import KeyStore
from controldb.responses import ResponseRecord, ResponseStore

from ..admission import Admissions, note_rate
from ..http import read_body, require_json
from ..router_calls import OpenedStream, RouterCalls, RouterLink, call_context
from ..v1 import JSON, SSE_HEADERS, authenticate, reply_error
from ..validation import invalid_value, validate_chat_request
from .request import (
    NATIVE_DIALECT,
    NATIVE_MIN_OUTPUT_TOKENS,
    Item,
    chat_body,
    native_body,
    parse_request,
)
from .response import (
    NativeEvents,
    ResponseEvents,
    ResponseShell,
    native_response,
    response_from_completion,
    response_id_of_item,
)

MAX_LIST_LIMIT = 100


def response_not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(
        404,
        f"Response with id '{response_id}' not found.",
        param=param,
        code="response_not_found",
    )


def _sse(event: Item) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _failure(body: Item) -> tuple[str, str]:
    """The code and message of an OpenAI error body, for the stream's `error` event."""
    found = body.get("error")
    error: Item = found if isinstance(found, dict) else {}
    return (
        str(error.get("code") or "upstream_error"),
        str(error.get("message") or "The upstream provider failed."),
    )


class ResponsesRoutes:
    def __init__(
        self,
        store: KeyStore,
        admissions: Admissions,
        catalog: LiveCatalog[Catalog],
        responses: ResponseStore,
        max_body_bytes: int,
    ) -> None:
        self._store = store
        self._admissions = admissions
        self._catalog = catalog
        self._responses = responses
        self._max_body_bytes = max_body_bytes
        self._calls = RouterCalls(admissions)

    def connect(self, link: RouterLink) -> None:
        self._calls.connect(link)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/input_items", self.input_items, methods=["GET"]),
        ]

    async def create(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        require_json(request)
        raw = parse_json_object(await read_body(request, self._max_body_bytes))
        call = parse_request(raw)
        history = await self._history(key.account_id, call.previous_response_id)
        if any(item["type"] == "item_reference" for item in call.input_items):
            items = await self._dereference(key.account_id, call.input_items)
            call = dataclasses.replace(call, input_items=items)
        model = self._catalog.current.chat(call.model)
        reasoning = model is not None and model.capabilities.reasoning
        body = chat_body(call, history, reasoning=reasoning)
        validate_chat_request(body)
        admitted = await self._admissions.chat(key, body)
        note_rate(request, admitted.admission)
        headers: dict[str, str] = {}
        native = native_body(raw, call, history, reasoning=reasoning)
        clamped = admitted.clamped_output_tokens
        if clamped is not None:
            body["max_completion_tokens"] = native["max_output_tokens"] = clamped
            headers["x-aig-max-tokens-clamped"] = str(clamped)
        message = pb.ChatRequest(
            context=call_context(request, key, admitted.admission), body=orjson.dumps(body)
        )
        if clamped is None or clamped >= NATIVE_MIN_OUTPUT_TOKENS:
            message.native.dialect = NATIVE_DIALECT
            message.native.body = orjson.dumps(native)
        shell = ResponseShell.new(call, call.model)
        if call.stream:
            opened = await self._calls.open_stream(message, admitted.admission)
            if opened.first.WhichOneof("event") == "error":
                return reply_error(opened.first.error, headers)
            frames = self._frames(opened, shell, key.account_id, history)
            headers = {**SSE_HEADERS, **headers, **opened.headers}
            return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
        reply = await self._calls.complete(message, admitted.admission, request)
        headers["x-aig-attempts"] = str(reply.attempts)
        if reply.WhichOneof("result") == "error":
            return reply_error(reply.error, headers)
        answer = orjson.loads(reply.completion)
        if reply.native:
            response = native_response(shell, answer)
        else:
            response = response_from_completion(shell, answer)
        await self._responses.save(key.account_id, response, call.input_items, history)
        headers.update({"x-aig-provider": reply.provider, "x-aig-model": reply.model})
        return Response(orjson.dumps(response), media_type=JSON, headers=headers)

    async def _frames(
        self, opened: OpenedStream, shell: ResponseShell, account_id: str, history: list[Item]
    ) -> AsyncIterator[bytes]:
        if opened.native:
            frames = self._native_frames(opened, shell, account_id, history)
            async for frame in frames:
                yield frame
            return
        translator = ResponseEvents(shell)
        for event in translator.start():
            yield _sse(event)
        ending = _Ending()
        # Once output flowed the router reports a failure as a chunk holding an OpenAI error.
        async with aclosing(_chunk_bodies(opened, ending, lambda body: "error" in body)) as bodies:
            async for body in bodies:
                for event in translator.feed(body):
                    yield _sse(event)
        if ending.failure is not None:
            for event in translator.fail(*ending.failure):
                yield _sse(event)
            return
        usage = ending.usage
        fallback_usage = (
            TokenUsage(
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_prompt_tokens,
                usage.reasoning_tokens,
            ).as_openai()
            if usage is not None
            else None
        )
        for event in translator.finish(fallback_usage):
            yield _sse(event)
        assert translator.final is not None
        await self._responses.save(account_id, translator.final, shell.request.input_items, history)

    async def _native_frames(
        self, opened: OpenedStream, shell: ResponseShell, account_id: str, history: list[Item]
    ) -> AsyncIterator[bytes]:
        """A stream the provider sent in the Responses API itself: its events with aig's
        ids, stored once `response.completed` (or `.incomplete`) arrives."""
        events = NativeEvents(shell)
        ending = _Ending()
        # Once events flowed the router reports a failure as a chunk holding an OpenAI error,
        # which has no `type`, unlike every Responses event.
        async with aclosing(
            _chunk_bodies(opened, ending, lambda body: "type" not in body)
        ) as bodies:
            async for body in bodies:
                for event in events.feed(body):
                    yield _sse(event)
        if ending.failure is not None:
            for event in events.fail(*ending.failure):
                yield _sse(event)
            return
        if events.final is None:
            ended = "The upstream provider ended the stream without a response."
            for event in events.fail("upstream_error", ended):
                yield _sse(event)
            return
        await self._responses.save(account_id, events.final, shell.request.input_items, history)

    async def _history(self, account_id: str, previous_id: str | None) -> list[Item]:
        if previous_id is None:
            return []
        record = await self._responses.get(account_id, previous_id)
        if record is None:
            raise response_not_found(previous_id, "previous_response_id")
        if not record.stored:
            raise invalid_value(
                "previous_response_id",
                f"response '{previous_id}' was created with 'store': false, so there is no "
                "stored conversation to continue.",
            )
        return record.conversation()

    async def _dereference(self, account_id: str, items: list[Item]) -> list[Item]:
        """`item_reference`s replaced by the account's stored output items they name."""
        records: dict[str, ResponseRecord | None] = {}
        resolved: list[Item] = []
        for index, item in enumerate(items):
            if item["type"] != "item_reference":
                resolved.append(item)
                continue
            found = None
            response_id = response_id_of_item(item["id"])
            if response_id is not None:
                if response_id not in records:
                    records[response_id] = await self._responses.get(account_id, response_id)
                record = records[response_id]
                found = record.output_item(item["id"]) if record is not None else None
            if found is None:
                raise APIError(
                    404,
                    f"Item with id '{item['id']}' not found.",
                    param=f"input[{index}].id",
                    code="item_not_found",
                )
            resolved.append(found)
        return resolved

    async def _stored(self, request: Request) -> tuple[str, ResponseRecord]:
        key = await authenticate(request, self._store)
        response_id = request.path_params["response_id"]
        record = await self._responses.get(key.account_id, response_id)
        if record is None or not record.stored:
            raise response_not_found(response_id)
        return key.account_id, record

    async def retrieve(self, request: Request) -> Response:
        _, record = await self._stored(request)
        return Response(orjson.dumps(record.response), media_type=JSON)

    async def delete(self, request: Request) -> Response:
        account_id, record = await self._stored(request)
        if not await self._responses.delete(account_id, record.id):
            raise response_not_found(record.id)
        deleted = {"id": record.id, "object": "response.deleted", "deleted": True}
        return Response(orjson.dumps(deleted), media_type=JSON)

    async def input_items(self, request: Request) -> Response:
        """This response's own input items (the conversation it continued is its previous
        response's), paged as OpenAI does: `limit`, `order` (default desc), `after`."""
        _, record = await self._stored(request)
        limit = _limit(request.query_params.get("limit"))
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid_value("order", "expected 'asc' or 'desc'.")
        items = record.input_items if order == "asc" else record.input_items[::-1]
        after = request.query_params.get("after")
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        listing = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
        return Response(orjson.dumps(listing), media_type=JSON)


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise invalid_value("limit", f"expected an integer from 1 to {MAX_LIST_LIMIT}.")
    return int(raw)


@dataclasses.dataclass
class _Ending:
    """How a router stream read by `_chunk_bodies` ended: with the usage its end carried,
    or with a failure (code, message) to report in the stream."""

    usage: pb.TokenUsage | None = None
    failure: tuple[str, str] | None = None


async def _chunk_bodies(
    opened: OpenedStream, ending: _Ending, is_failure: Callable[[Item], bool]
) -> AsyncGenerator[Item, None]:
    """The JSON body of each chunk of a router stream, in order, until it ends or fails;
    how it ended is left in `ending`. Before any output the router reports a failure as an
    `error` event (its status still known); after, as a chunk that `is_failure` tells
    apart. The router call is cancelled whichever way the reading stops."""
    try:
        message = opened.first
        while True:
            kind = message.WhichOneof("event")
            if kind not in ("chunk", "error"):
                if kind == "end" and message.end.HasField("usage"):
                    ending.usage = message.end.usage
                return
            body = orjson.loads(message.chunk if kind == "chunk" else message.error.body)
            if kind == "error" or is_failure(body):
                ending.failure = _failure(body)
                return
            yield body
            message = await opened.rest.__anext__()
    except StopAsyncIteration:
        return
    except grpc.aio.AioRpcError as exc:
        dropped = f"The gateway's router dropped the stream ({exc.code().name})."
        ending.failure = ("router_unavailable", dropped)
    finally:
        opened.call.cancel()
