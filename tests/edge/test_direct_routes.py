"""The calls' direct routes answer exactly as FastAPI's stack answers the same handlers:
request ids, rate-limit headers, metrics, request limits and every error in its dialect."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from aig_common.errors import APIError
from edge.app import EdgeApp
from edge.direct_routes import DirectRoutes
from edge.http import (
    RequestIdMiddleware,
    RequestLimits,
    RequestLimitsMiddleware,
    add_response_headers,
    install_error_handlers,
    read_body,
    request_id,
)
from edge.metrics import MetricsMiddleware, note_model

FAILURES: dict[str, Exception] = {
    "api": APIError(402, "Spend cap reached.", code="key_daily_cap"),
    "busy": sqlite3.OperationalError("database is locked"),
    "nul": DBAPIError("INSERT", {}, Exception("invalid byte sequence 0x00")),
    "refused": DBAPIError("INSERT", {}, Exception("deadlock detected")),
    "bug": RuntimeError("a bug"),
}


async def chat(request: Request) -> Response:
    """Reads the body as the real handlers do; its text says how to answer."""
    body = await read_body(request, 1_000)
    add_response_headers(request, {"x-ratelimit-limit-requests": "60"})
    note_model("gpt-4o-mini")
    failure = FAILURES.get(body.decode())
    if failure is not None:
        raise failure
    answer = b'{"id":"%s","echo":"%s"}' % (request_id(request).encode(), body)
    return Response(answer, media_type="application/json", headers={"x-aig-provider": "p1"})


async def create_task(request: Request) -> Response:
    raise APIError(422, "bad task", code="invalid_task")


def _app(direct: bool, body_timeout_s: float = 5) -> EdgeApp:
    app = EdgeApp()
    install_error_handlers(app)
    limits = RequestLimits(max_header_bytes=4_000, body_timeout_s=body_timeout_s)
    app.add_middleware(RequestLimitsMiddleware, limits=limits)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/jobs/createTask", create_task, methods=["POST"]),
    ]
    app.router.routes.extend(routes)
    if direct:
        app.direct_routes = routes
        app.request_limits = limits
    return app


def _exchange(
    app: EdgeApp, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes, dict[str, str], str | None]:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.request(method, url, **kwargs)
    headers = dict(response.headers)
    # The echo carries the request id the handler saw, which differs run to run: cut it off.
    body = response.content.split(b'"echo"')[-1]
    return response.status_code, body, headers, headers.pop("x-request-id", None)


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/chat/completions", {"content": b"hello"}),
    *[("POST", "/v1/chat/completions", {"content": name.encode()}) for name in FAILURES],
    ("POST", "/v1/chat/completions", {"content": b"x" * 2_000}),  # over read_body's limit
    ("POST", "/v1/chat/completions", {"content": b"hi", "headers": {"x-big": "b" * 5_000}}),
    ("POST", "/v1/chat/completions?after=%00", {"content": b"hi"}),
    ("GET", "/v1/chat/completions", {}),  # not direct: FastAPI's 405
    ("POST", "/v1/jobs/createTask", {"content": b"{}"}),  # Kie's error envelope
    ("POST", "/v1/chat/completions/", {"content": b"hi"}),  # not a direct path
]


@pytest.mark.parametrize(("method", "url", "kwargs"), CASES)
def test_a_direct_route_answers_as_the_stack_does(
    method: str, url: str, kwargs: dict[str, Any]
) -> None:
    status, body, headers, direct_id = _exchange(_app(direct=True), method, url, **kwargs)
    *stack, stack_id = _exchange(_app(direct=False), method, url, **kwargs)
    assert direct_id is not None and direct_id.startswith("req_")
    if stack[0] == 500:
        # Better than the stack: a direct route's 500 names its request and keeps the
        # headers the handler added, where Starlette's error middleware, outside
        # RequestIdMiddleware, answers without them.
        assert stack_id is None
        assert headers.pop("x-ratelimit-limit-requests") == "60"
    else:
        assert stack_id is not None
    assert [status, body, headers] == stack


def test_the_direct_path_is_taken_and_metered() -> None:
    app = _app(direct=True)
    with TestClient(app, raise_server_exceptions=False) as client:

        def count() -> float:
            labels = {
                "route": "/v1/chat/completions",
                "model": "gpt-4o-mini",
                "provider": "p1",
                "status": "200",
            }
            return REGISTRY.get_sample_value("aig_edge_http_responses_total", labels) or 0.0

        before = count()
        response = client.post("/v1/chat/completions", content=b"hello")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "60"
        assert count() == before + 1
        assert isinstance(app.middleware_stack, DirectRoutes)
        assert app.middleware_stack.paths == ["/v1/chat/completions", "/v1/jobs/createTask"]


def test_an_unexpected_error_is_answered_and_still_reaches_the_server() -> None:
    with (
        TestClient(_app(direct=True), raise_server_exceptions=True) as client,
        pytest.raises(RuntimeError, match="a bug"),
    ):
        client.post("/v1/chat/completions", content=b"bug")
    with TestClient(_app(direct=True), raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", content=b"bug")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize("direct", [True, False])
async def test_a_body_that_stops_arriving_gets_408(direct: bool) -> None:
    """The first part of the body arrives, the rest never does: 408 once the body deadline
    passes, through either path."""
    app = _app(direct, body_timeout_s=0.2)
    parts: list[Message] = [{"type": "http.request", "body": b"hel", "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"edge"), (b"content-length", b"5")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b'"request_timeout"' in sent[1]["body"]
