"""HTTP plumbing shared by the simulators: JSON bodies, SSE streams, latency, stream cuts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.settings import SandboxSettings
from sandbox.timer import precise_sleep


class InvalidBody(ValueError):
    """The request body is not JSON (or not a JSON object)."""


class StreamCut(Exception):
    """Raised inside a streaming response to drop the connection mid-body.

    The server then closes the socket without terminating the chunked body, which is
    what a client sees when an upstream dies mid-stream.
    """


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        raise InvalidBody("request body is empty")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidBody("request body must be a JSON object")
    return parsed


async def first_byte_delay(settings: SandboxSettings) -> None:
    if settings.latency_ms > 0:
        await precise_sleep(settings.latency_ms / 1000)


class EventStreamResponse(Response):
    """Sends pre-encoded SSE events, pacing them by `chunk_interval_ms`; the last
    `unpaced_tail` events follow the one before them at once, as providers send their
    closing events.

    When `cut_after` is set, only that many events go out; then `cut_event` is sent and
    the body closes cleanly, or, without a `cut_event`, the connection is dropped.
    Written against raw ASGI because it is on the benchmarks' hot path.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: Sequence[bytes],
        settings: SandboxSettings,
        *,
        headers: dict[str, str] | None = None,
        cut_after: int | None = None,
        cut_event: bytes | None = None,
        unpaced_tail: int = 0,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", **(headers or {}), "content-type": self.media_type}
        )
        self._events = events
        self._interval = settings.chunk_interval_ms / 1000
        self._cut_after = cut_after
        self._cut_event = cut_event
        self._paced = len(events) - unpaced_tail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        for sent, event in enumerate(self._events):
            if self._cut_after is not None and sent >= self._cut_after:
                await self._cut(send)
                return
            if sent and sent < self._paced and self._interval > 0:
                await precise_sleep(self._interval)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if self._cut_after is not None:
            await self._cut(send)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _cut(self, send: Send) -> None:
        if self._cut_event is None:
            raise StreamCut("sandbox fault: stream cut")
        await send({"type": "http.response.body", "body": self._cut_event, "more_body": False})


class _HideStreamCuts(logging.Filter):
    """Keeps the server log free of tracebacks for cuts we cause on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, StreamCut)


_STREAM_CUT_FILTER = _HideStreamCuts()


def hide_stream_cut_tracebacks() -> None:
    logging.getLogger("uvicorn.error").addFilter(_STREAM_CUT_FILTER)
