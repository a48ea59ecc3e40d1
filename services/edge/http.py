"""HTTP plumbing of the edge: request ids, errors in the route's dialect, bounded body reads."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aig_common import logs, tracing
from aig_common.errors import APIError

from .anthropic_ingress import errors as anthropic_errors
from .route_template import route_template

log = logging.getLogger("edge")


class RequestIdMiddleware:
    """Gives every response an `x-request-id`, the id the OpenAI SDKs surface in errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = start_request_id(scope)
        state = scope["state"]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_request_headers(message, state, header)
            await send(message)

        await self.app(scope, receive, send_with_id)


def start_request_id(scope: Scope) -> tuple[bytes, bytes]:
    """A new request's id: in the scope's state (where handlers read it), in the logging
    context, and returned as the `x-request-id` header its response will carry."""
    request_id = "req_" + secrets.token_hex(16)
    scope.setdefault("state", {})["request_id"] = request_id
    logs.current_request_id.set(request_id)
    return (b"x-request-id", request_id.encode())


def add_request_headers(
    message: Message, state: dict[str, Any], id_header: tuple[bytes, bytes]
) -> None:
    """Onto a response's start: its request id, and what handlers added with
    `add_response_headers` (rate-limit headers) whichever response the request ended with."""
    message["headers"] = [*message.get("headers", []), id_header, *state.get(_ADDED_HEADERS, ())]


class TracingMiddleware:
    """One SERVER span per HTTP request, continuing the client's `traceparent` if it sent
    one. Installed only when tracing is on. The span is named by the route template, never
    the raw path (a dashboard link's path holds a signed token); the query is not recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = [
            (name.decode("latin-1"), value)
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        ]
        method = scope["method"]
        attributes = {
            "http.request.method": method,
            "aig.request_id": scope.get("state", {}).get("request_id", ""),
        }
        with tracing.span(
            f"{method} other",
            parent=tracing.context_from_headers(received),
            kind=tracing.SpanKind.SERVER,
            attributes=attributes,
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start" and span is not None:
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(tracing.Status(tracing.StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = route_template(scope) if span is not None else None
                if span is not None and route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


class RequestLimits:
    """Bounds what one request may cost before any handler runs.

    - Headers over `max_header_bytes` in all get 431 at once: a 1 MB `Authorization` header
      is never hashed, logged or parsed further.
    - A NUL in the URL gets 400: no id, name or filter aig stores can hold one.
    - The whole body must arrive within `body_timeout_s` of the request's start, or the
      request ends with 408: a client that declares 1,000 bytes and sends one cannot hold a
      connection and a task open for as long as it likes.
    """

    def __init__(self, *, max_header_bytes: int, body_timeout_s: float) -> None:
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self._deadlines = BodyDeadlines(sweep_every_s=min(1.0, max(0.01, body_timeout_s / 10)))

    def refusal(self, scope: Scope) -> APIError | None:
        """The error a request gets before anything else is done with it, if any."""
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # No id, name or filter aig stores can hold a NUL (PostgreSQL's text cannot), so
            # such a URL names nothing; refused here, it never reaches a database as a 500.
            return APIError(
                400,
                "The URL contains a NUL character (%00), which no id, name or filter can hold.",
                code="invalid_url",
            )
        size = sum(len(name) + len(value) for name, value in scope["headers"])
        if size > self.max_header_bytes:
            return APIError(
                431,
                f"The request's headers ({size} bytes) exceed the gateway's limit of "
                f"{self.max_header_bytes} bytes.",
                code="headers_too_large",
            )
        return None

    def receive_by_deadline(self, receive: Receive) -> Receive:
        """`receive`, raising a 408 APIError if the body is not all in by the deadline."""
        deadline = time.monotonic() + self.body_timeout_s
        body_done = False
        deadlines = self._deadlines

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            deadlines.enter(task, deadline)
            try:
                message = await receive()
            except asyncio.CancelledError:
                # A 408 if the sweep cancelled it for its deadline and nobody else did too
                # (as asyncio.timeout decides).
                if deadlines.leave(task) and task.uncancel() <= cancelling:
                    raise APIError(
                        408,
                        f"The request body did not arrive within {self.body_timeout_s:g} s.",
                        code="request_timeout",
                        headers={"connection": "close"},
                    ) from None
                raise
            deadlines.leave(task)
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        return receive_in_time


class BodyDeadlines:
    """The body deadlines of the requests reading a body, checked by one timer for them all.

    Nearly every body arrives whole with its headers, so the first `receive` returns at
    once. `asyncio.timeout_at` armed and cancelled a timer for each of them (6.2 us of CPU
    per request on a warm core, 3.4 for a bare `call_at` and its cancel). Here a request
    only notes its deadline while it waits for its body, and one sweep, every
    `sweep_every_s` while any request is waiting, cancels the tasks past theirs: a 408 can
    come up to `sweep_every_s` late.
    """

    def __init__(self, sweep_every_s: float) -> None:
        self._sweep_every_s = sweep_every_s
        self._reading: dict[asyncio.Task[Any], float] = {}  # monotonic deadlines
        self._late: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def enter(self, task: asyncio.Task[Any], deadline: float) -> None:
        self._reading[task] = deadline
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self._sweep_every_s, self._sweep_late)

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Ends `task`'s wait; True if the sweep cancelled it for being late."""
        self._reading.pop(task, None)
        if task in self._late:
            self._late.discard(task)
            return True
        return False

    def _sweep_late(self) -> None:
        self._sweep = None
        now = time.monotonic()
        late = [task for task, deadline in self._reading.items() if deadline <= now]
        for task in late:
            del self._reading[task]
            self._late.add(task)
            task.cancel()
        if self._reading:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self._sweep_every_s, self._sweep_late)


class RequestLimitsMiddleware:
    """`RequestLimits` for every route but the direct ones (edge/direct_routes.py), which
    apply them themselves."""

    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.limits.refusal(scope)
        if refused is not None:
            await error_response(refused, scope["path"])(scope, receive, send)
            return
        await self.app(scope, self.limits.receive_by_deadline(receive), send)


_ADDED_HEADERS = "added_response_headers"


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers for whatever response this request ends with, errors included (RequestIdMiddleware
    adds them): what a handler learnt before it knew which response it would build."""
    added = request.scope.setdefault("state", {}).setdefault(_ADDED_HEADERS, [])
    added.extend((name.encode(), value.encode()) for name, value in headers.items())


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


KIE_PATH_PREFIX = "/v1/jobs"


def kie_error_body(exc: APIError) -> bytes:
    """Both envelopes: Kie's `code`/`msg` and OpenAI's `error`, for the media routes."""
    return orjson.dumps({"code": exc.status, "msg": exc.message, "data": None, **exc.body()})


def error_response(exc: APIError, path: str = "", request_id: str = "") -> Response:
    """The error in the dialect of the route asked for: Anthropic's shape under
    /v1/messages, Kie's envelope under /v1/jobs (whichever layer failed, auth and body limits
    included), OpenAI's elsewhere."""
    headers = exc.headers
    if path.startswith(anthropic_errors.PATH_PREFIX):
        body = anthropic_errors.from_api_error(exc, request_id)
        headers = {**headers, "request-id": request_id} if request_id else headers
    elif path == KIE_PATH_PREFIX or path.startswith(KIE_PATH_PREFIX + "/"):
        body = kie_error_body(exc)
    else:
        body = exc.to_bytes()
    return Response(body, status_code=exc.status, headers=headers, media_type="application/json")


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON. A missing Content-Type is read as JSON, as
    OpenAI does; a form or text body is refused instead of being parsed as JSON by accident."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media_type = declared.partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise APIError(
        415,
        f"Unsupported Content-Type {media_type or '(empty)'!r}: send the body as "
        "'application/json'.",
        code="unsupported_media_type",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """Reads the body, refusing it as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"The request body is larger than the gateway's limit of {limit} bytes.",
        code="request_too_large",
    )


def install_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, exc: APIError) -> Response:
        return error_response(exc, request.url.path, request_id(request))

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return respond(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "Unknown request URL.", 405: "Method not allowed for this URL."}.get(
            exc.status_code, str(exc.detail)
        )
        code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
        error = APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None))
        return respond(request, error)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors: list[Any] = list(exc.errors())
        first = errors[0] if errors else {}
        location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"Invalid request: {first.get('msg', 'bad input')}" + (
            f" ('{location}')" if location else ""
        )
        error = APIError(400, message, param=location or None, code="invalid_request")
        return respond(request, error)

    async def on_database_busy(request: Request, exc: Exception) -> Response:
        # Locked or unreachable: the call was not admitted and nothing was spent; retrying
        # is right. The type only: driver messages can carry connection details.
        log.warning("control database unavailable: %s", type(exc).__name__)
        error = APIError(
            503,
            "The gateway's database is busy or unreachable; nothing was charged. Please retry.",
            code="database_unavailable",
            headers={"retry-after": "1"},
        )
        return respond(request, error)

    async def on_database_refusal(request: Request, exc: Exception) -> Response:
        # PostgreSQL refuses a NUL in text (SQLSTATE 22021) that SQLite would have stored: a
        # client's string, not a fault of ours. Any other refusal goes on to the handler of
        # the unexpected, which answers 500 and lets the server log the traceback.
        original = getattr(exc, "orig", None)
        if getattr(original, "sqlstate", None) == "22021" or "0x00" in str(original):
            error = APIError(
                400,
                "A text field holds a NUL character (\\u0000), which cannot be stored.",
                code="invalid_text",
            )
            return respond(request, error)
        raise exc

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return respond(
            request, APIError(500, "The gateway hit an internal error.", code="internal_error")
        )

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(OperationalError, on_database_busy)
    app.add_exception_handler(sqlite3.OperationalError, on_database_busy)
    app.add_exception_handler(DBAPIError, on_database_refusal)
    # Anything else still reaches the server's log with its traceback (Starlette re-raises
    # after answering); the client gets its dialect's error shape instead of a bare text 500.
    app.add_exception_handler(Exception, on_unexpected)
