"""The calls (`POST /v1/chat/completions`, `/v1/messages`, `/v1/responses`, ...) served
straight from the ASGI server, in front of FastAPI's middleware stack.

Every other request crosses Starlette's error middleware, the edge's three middlewares
(request id, metrics, request limits), Starlette's exception middleware, FastAPI's exit
stack and the router's route matching: about 60 µs of CPU per request that a call, whose
handler reads the raw request itself, has no use for. A direct route does the same work in
one frame: the request id and its headers (edge/http.py), the response meter
(edge/metrics.py), the request limits (431, the NUL check, the body deadline's 408), then
the handler; an exception is answered by the app's own exception handlers, so errors keep
the route's dialect, and one no handler names is answered 500 and re-raised for the
server's log, as Starlette does.

Only plain routes with an exact path and POST are taken; any other method or path goes to
the FastAPI app, which answers 404/405 as before. With tracing on, nothing is direct: the
request's span comes from TracingMiddleware, inside the stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http import RequestLimits, add_request_headers, start_request_id
from .metrics import ResponseMeter

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    def __init__(
        self,
        app: Any,
        fallback: ASGIApp,
        routes: Iterable[Route],
        limits: RequestLimits,
    ) -> None:
        """`app` is the FastAPI app (handlers read `request.app`; its exception handlers
        answer errors); `fallback` its middleware stack, which serves everything not direct."""
        exception_handlers: dict[Any, Callable[..., Any]] = app.exception_handlers
        self._app = app
        self._fallback = fallback
        self._limits = limits
        self._routes: dict[str, Route] = {
            route.path: route
            for route in routes
            if "POST" in (route.methods or ()) and not route.param_convertors
        }
        self._handlers = {
            kind: handler
            for kind, handler in exception_handlers.items()
            if isinstance(kind, type) and kind is not Exception
        }
        self._server_error: ExceptionHandler | None = exception_handlers.get(Exception)

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self._routes.get(scope["path"])
            if route is not None:
                await self._serve(route, scope, receive, send)
                return
        await self._fallback(scope, receive, send)

    async def _serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self._app
        scope["route"] = route  # its path_format labels the metrics
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        id_header = start_request_id(scope)
        state = scope["state"]
        meter = ResponseMeter(scope)
        started = False

        async def send_direct(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                add_request_headers(message, state, id_header)
            meter.observe(message)
            await send(message)

        request = Request(scope, self._limits.receive_by_deadline(receive))
        try:
            refused = self._limits.refusal(scope)
            if refused is not None:
                raise refused
            response = await route.endpoint(request)
            await response(scope, receive, send_direct)
        except Exception as exc:
            if started:
                raise  # nothing more can be said on this response; the server logs it
            await self._answer(request, exc, receive, send_direct)
        finally:
            meter.end()

    async def _answer(self, request: Request, exc: Exception, receive: Receive, send: Send) -> None:
        handler = self._handler_for(exc)
        if handler is not None:
            try:
                response = await handler(request, exc)
            except Exception as unexpected:  # a handler that declines (re-raises) it
                exc, handler = unexpected, None
        if handler is None:
            if self._server_error is None:
                raise exc
            response = await self._server_error(request, exc)
            await response(request.scope, receive, send)
            raise exc  # answered; re-raised so the server logs the traceback
        await response(request.scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for kind in type(exc).__mro__:
            handler = self._handlers.get(kind)
            if handler is not None:
                return handler
        return None
