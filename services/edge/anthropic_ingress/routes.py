"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: the edge's Anthropic dialect.

The same path as chat: authenticate (`x-api-key` or Bearer), validate, admit the worst case
(402 before any spend), send the internal chat body to the router, answer in Anthropic's
shapes. The client's own body travels beside it (router.proto NativeBody): a route served
by Anthropic gets it untranslated, thinking, cache_control and all, and its answer comes
back as Anthropic made it (the message id and model made aig's); any other route answers
in chat's format, translated here. `anthropic-version` is accepted whatever its value: the
shapes served are those of 2023-06-01, the only version Anthropic has published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aig.router.v1 import router_pb2 as pb
from aig_common.errors import parse_json_object
from catalog.estimate import estimate_prompt_tokens
from controldb import AuthenticatedKey, KeyStore
from controldb.money import Admission

from ..admission import Admissions, note_rate
from ..http import read_body, request_id, require_json
from ..router_calls import RouterCalls, RouterLink, call_context
from ..v1 import JSON, SSE_HEADERS, authenticate
from . import errors
from .request import check_model, messages_to_chat, prompt_to_chat
from .response import StreamTranslator, completion_to_message, error_event, message_id, sse

# The dialect named in router.proto's NativeBody for this ingress.
DIALECT = "anthropic.messages"


class MessagesRoutes:
    def __init__(self, store: KeyStore, admissions: Admissions, max_body_bytes: int) -> None:
        self._store = store
        self._admissions = admissions
        self._max_body_bytes = max_body_bytes
        self._calls = RouterCalls(admissions)

    def connect(self, link: RouterLink) -> None:
        self._calls.connect(link)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self.create, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
        ]

    async def _authenticate(self, request: Request) -> AuthenticatedKey:
        api_key = request.headers.get("x-api-key")
        return await authenticate(
            request,
            self._store,
            token=api_key.strip() if api_key is not None else None,
            how="'x-api-key: sk-aig-...' or 'Authorization: Bearer sk-aig-...'",
        )

    async def _body(self, request: Request) -> dict[str, Any]:
        require_json(request)
        return parse_json_object(await read_body(request, self._max_body_bytes))

    async def count_tokens(self, request: Request) -> Response:
        """An estimate, not a tokenizer's count: the over-estimate admission reserves for
        (UTF-8 bytes / 3, per-message overheads, the model's worst case per image), so a
        client that budgets its context by it never overflows."""
        await self._authenticate(request)
        chat = prompt_to_chat(await self._body(request))
        model = self._admissions.chat_model(chat["model"])
        tokens = estimate_prompt_tokens(chat, tokens_per_image=model.image_input_tokens)
        return Response(orjson.dumps({"input_tokens": tokens}), media_type=JSON)

    async def create(self, request: Request) -> Response:
        key = await self._authenticate(request)
        body = await self._body(request)
        model = self._admissions.chat_model(check_model(body))
        chat = messages_to_chat(
            body,
            reasoning=model.capabilities.reasoning,
            claude=self._admissions.provider_type(model) == "anthropic",
        )
        # Anthropic's clients size max_tokens for Claude (Claude Code asks 32,000); a model
        # that makes less would refuse it upstream. Its own maximum is what was asked for.
        chat["max_completion_tokens"] = min(chat["max_completion_tokens"], model.max_output_tokens)
        # max_tokens is required, so admission reserves exactly it and never clamps.
        admission = (await self._admissions.chat(key, chat)).admission
        note_rate(request, admission)
        message = pb.ChatRequest(
            context=call_context(request, key, admission),
            body=orjson.dumps(chat),
            native=pb.NativeBody(
                dialect=DIALECT, body=orjson.dumps(body), headers=_passed_headers(request)
            ),
        )
        rid = request_id(request)
        if chat.get("stream"):
            return await self._stream(message, admission, chat["model"], rid)
        reply = await self._calls.complete(message, admission, request)
        headers = {"x-aig-attempts": str(reply.attempts), "request-id": rid}
        if reply.WhichOneof("result") == "error":
            return _error_reply(reply.error, rid, headers)
        headers.update({"x-aig-provider": reply.provider, "x-aig-model": reply.model})
        if reply.native:
            answer = orjson.loads(reply.completion)
            answer["id"] = message_id(rid)
            return Response(orjson.dumps(answer), media_type=JSON, headers=headers)
        answer = completion_to_message(orjson.loads(reply.completion), reply.usage, rid)
        return Response(orjson.dumps(answer), media_type=JSON, headers=headers)

    async def _stream(
        self, message: pb.ChatRequest, admission: Admission, model: str, rid: str
    ) -> Response:
        opened = await self._calls.open_stream(message, admission)
        if opened.first.WhichOneof("event") == "error":
            opened.call.cancel()
            return _error_reply(opened.first.error, rid, {"request-id": rid})
        translator = StreamTranslator(rid, opened.headers.get("x-aig-model") or model)
        native = opened.native

        async def frames() -> AsyncIterator[bytes]:
            event = opened.first
            try:
                while True:
                    kind = event.WhichOneof("event")
                    if kind == "chunk":
                        chunk = orjson.loads(event.chunk)
                        if "error" in chunk and "type" not in chunk:
                            # Once output flowed the router sends a failure as a chunk
                            # (its status is gone): Anthropic's `event: error` ends the stream.
                            yield error_event(errors.from_openai_body(502, event.chunk, rid))
                            return
                        if native:
                            yield _native_frame(chunk, rid)
                            event = await opened.rest.__anext__()
                            continue
                        for frame in translator.chunk(chunk):
                            yield frame
                    elif kind == "error":
                        yield error_event(
                            errors.from_openai_body(event.error.status, event.error.body, rid)
                        )
                        return
                    else:
                        if not native:  # a native stream ended with Anthropic's own events
                            for frame in translator.end(event.end.usage):
                                yield frame
                        return
                    event = await opened.rest.__anext__()
            except StopAsyncIteration:
                # The router always ends with `end`; a stream without one lost its usage.
                yield error_event(_dropped(rid, "ended without its usage"))
            except grpc.aio.AioRpcError as exc:
                yield error_event(_dropped(rid, f"was dropped ({exc.code().name})"))
            finally:
                opened.call.cancel()

        headers = {**SSE_HEADERS, **opened.headers, "request-id": rid}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


def _passed_headers(request: Request) -> dict[str, str]:
    """The client's headers Claude reads with its body: the beta features it may use."""
    beta = request.headers.get("anthropic-beta")
    return {"anthropic-beta": beta} if beta else {}


def _native_frame(event: dict[str, Any], rid: str) -> bytes:
    """One of Claude's own stream events, framed as it came (its `type` names the SSE event);
    the message carries aig's id, as a translated answer does."""
    kind = str(event["type"])
    if kind == "message_start" and isinstance(event.get("message"), dict):
        event["message"]["id"] = message_id(rid)
    return sse(kind, event)


def _error_reply(reply: pb.ErrorReply, rid: str, headers: dict[str, str]) -> Response:
    body = errors.from_openai_body(reply.status, reply.body, rid)
    return Response(
        body, status_code=reply.status, headers={**reply.headers, **headers}, media_type=JSON
    )


def _dropped(rid: str, what: str) -> bytes:
    inner = errors.error_object(502, f"The gateway's router stream {what}.")
    return errors.error_bytes(502, inner, rid)
