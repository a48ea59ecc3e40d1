"""The OpenAI-compatible `/v1` surface: chat completions, embeddings, models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aig.router.v1 import router_pb2 as pb
from aig_common.errors import APIError, error_bytes, model_not_found, parse_json_object
from catalog.media import MediaCatalog
from controldb import AuthenticatedKey, KeyStore
from controldb.money import Admission

from .admission import Admissions, note_rate
from .http import read_body, require_json
from .router_calls import RouterCalls, RouterLink, call_context, router_unavailable
from .throttle import auth_subjects, record_failure, refuse_if_throttled
from .validation import validate_chat_request, validate_embeddings_request

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE_FRAME = b"data: [DONE]\n\n"


def reply_error(reply: pb.ErrorReply, extra_headers: dict[str, str] | None = None) -> Response:
    headers = {**reply.headers, **(extra_headers or {})}
    return Response(reply.body, status_code=reply.status, headers=headers, media_type=JSON)


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer ...` header, or "" without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def authenticate(
    request: Request,
    store: KeyStore,
    token: str | None = None,
    how: str = "'Authorization: Bearer sk-aig-...'",
) -> AuthenticatedKey:
    """The key a request presents: `token` when the dialect found it elsewhere (Anthropic's
    `x-api-key`), else the Bearer token. `how` tells a caller without one where it goes."""
    token = bearer_token(request) if token is None else token
    subjects = auth_subjects(request, token)
    refuse_if_throttled(request, subjects)
    if not token:
        record_failure(request, subjects)
        raise APIError(
            401, f"You didn't provide an API key. Send it as {how}.", code="missing_api_key"
        )
    key = await store.authenticate(token)
    if key is None:
        record_failure(request, subjects)
        # Show only enough of the key for the owner to recognise it; never the whole secret.
        hint = f"{token[:10]}...{token[-4:]}" if len(token) > 20 else "***"
        raise APIError(401, f"Incorrect API key provided: {hint}.", code="invalid_api_key")
    return key


class OpenAIRoutes:
    def __init__(
        self,
        store: KeyStore,
        admissions: Admissions,
        max_body_bytes: int,
        media: MediaCatalog | None = None,
    ) -> None:
        self._store = store
        # Media models (served through /v1/jobs) join the router's chat and embeddings list.
        self._media_models = media.model_objects() if media is not None else []
        self._merged_models: tuple[bytes, bytes] = (b"", b"")
        self._admissions = admissions
        self._max_body_bytes = max_body_bytes
        self._calls = RouterCalls(admissions)

    def connect(self, link: RouterLink) -> None:
        self._calls.connect(link)

    def routes(self) -> list[Route]:
        """Plain Starlette routes: the handlers read the raw request themselves, so FastAPI's
        per-request dependency and validation machinery would only add cost (about half of
        the framework's time per call)."""
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.get_model, methods=["GET"]),
        ]

    async def chat_completions(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        require_json(request)
        raw = await read_body(request, self._max_body_bytes)
        body = parse_json_object(raw)
        validate_chat_request(body)
        admitted = await self._admissions.chat(key, body)
        admission = admitted.admission
        note_rate(request, admission)
        clamp: dict[str, str] = {}
        if admitted.clamped_output_tokens is not None:
            # The reservation only covers this much output: the provider must not make more.
            body["max_completion_tokens"] = admitted.clamped_output_tokens
            raw = orjson.dumps(body)
            clamp = {"x-aig-max-tokens-clamped": str(admitted.clamped_output_tokens)}
        message = pb.ChatRequest(context=call_context(request, key, admission), body=raw)
        if body.get("stream"):
            return await self._stream_chat(message, admission, clamp)
        reply = await self._calls.complete(message, admission, request)
        attempts = {"x-aig-attempts": str(reply.attempts), **clamp}
        if reply.WhichOneof("result") == "error":
            return reply_error(reply.error, attempts)
        headers = {"x-aig-provider": reply.provider, "x-aig-model": reply.model, **attempts}
        return Response(reply.completion, media_type=JSON, headers=headers)

    async def _stream_chat(
        self, message: pb.ChatRequest, admission: Admission, extra_headers: dict[str, str]
    ) -> Response:
        opened = await self._calls.open_stream(message, admission)
        first, events, call = opened.first, opened.rest, opened.call
        headers = {**SSE_HEADERS, **opened.headers, **extra_headers}
        if first.WhichOneof("event") == "error":
            return reply_error(first.error)

        async def frames() -> AsyncIterator[bytes]:
            try:
                event = first
                while True:
                    kind = event.WhichOneof("event")
                    if kind == "chunk":
                        yield b"data: " + event.chunk + b"\n\n"
                    elif kind == "error":
                        yield b"data: " + event.error.body + b"\n\n"
                    else:
                        break
                    event = await events.__anext__()
            except StopAsyncIteration:
                pass
            except grpc.aio.AioRpcError as exc:
                body = error_bytes(
                    f"The gateway's router dropped the stream ({exc.code().name}).",
                    status=502,
                    code="router_unavailable",
                )
                yield b"data: " + body + b"\n\n"
            finally:
                call.cancel()
            yield DONE_FRAME

        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    async def embeddings(self, request: Request) -> Response:
        key = await authenticate(request, self._store)
        require_json(request)
        raw = await read_body(request, self._max_body_bytes)
        body = parse_json_object(raw)
        validate_embeddings_request(body)
        admission = await self._admissions.embeddings(key, body)
        note_rate(request, admission)
        message = pb.EmbeddingsRequest(context=call_context(request, key, admission), body=raw)
        try:
            reply = await self._calls.router.CreateEmbeddings(message)
        except grpc.aio.AioRpcError as exc:
            await self._calls.failed(exc, admission)
        if reply.WhichOneof("result") == "error":
            return reply_error(reply.error)
        return Response(reply.response, media_type=JSON, headers={"x-aig-provider": reply.provider})

    async def _models(self) -> bytes:
        try:
            reply = await self._calls.router.ListModels(pb.ListModelsRequest())
        except grpc.aio.AioRpcError as exc:
            raise router_unavailable(exc) from exc
        if not self._media_models:
            return reply.body
        if self._merged_models[0] != reply.body:  # the router's list rarely changes
            listing: dict[str, Any] = orjson.loads(reply.body)
            for model in listing.get("data", []):
                model.setdefault("modality", "text")
            listing["data"] = [*listing.get("data", []), *self._media_models]
            self._merged_models = (reply.body, orjson.dumps(listing))
        return self._merged_models[1]

    async def list_models(self, request: Request) -> Response:
        await authenticate(request, self._store)
        return Response(await self._models(), media_type=JSON)

    async def get_model(self, request: Request) -> Response:
        await authenticate(request, self._store)
        model_id = request.path_params["model_id"]
        listing: dict[str, Any] = orjson.loads(await self._models())
        for model in listing.get("data", []):
            if model.get("id") == model_id:
                return Response(orjson.dumps(model), media_type=JSON)
        raise model_not_found(model_id)
