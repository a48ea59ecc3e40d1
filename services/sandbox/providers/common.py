"""Steps every simulated provider call goes through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandbox.state import Fault, SandboxState
from sandbox.transport import InvalidBody, first_byte_delay, read_json_object


async def read_and_log(
    request: Request, state: SandboxState, provider: str
) -> dict[str, Any] | InvalidBody:
    """Parse the JSON body and record the call; a bad body is returned, not raised."""
    try:
        body: dict[str, Any] | InvalidBody = await read_json_object(request)
        logged: Any = body
    except InvalidBody as exc:
        body = exc
        logged = (await request.body()).decode("utf-8", "replace")
    state.requests.record(
        provider,
        request.url.path,
        request.url.query,
        request.scope["headers"],
        logged,
    )
    return body


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _sep, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    """A named SSE event (`event:` line, then `data:`), as Anthropic and OpenAI Responses send."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def fragments(text: str, parts: int) -> list[str]:
    """Split tool-call arguments into `parts` pieces so clients must accumulate them."""
    if len(text) <= 1:
        return [text]
    step = max(1, -(-len(text) // parts))
    return [text[index : index + step] for index in range(0, len(text), step)]


def log_without_body(request: Request, state: SandboxState, provider: str) -> None:
    state.requests.record(
        provider, request.url.path, request.url.query, request.scope["headers"], None
    )


async def media_call_refused(
    state: SandboxState,
    provider: str,
    *,
    has_key: bool,
    unauthorised: Callable[[], Response],
    fault_response: Callable[[Fault], Response],
) -> Response | None:
    """Latency, the key check and up-front faults, in that order, for a media API call;
    the answer to send instead of serving it, or None."""
    await first_byte_delay(state.settings)
    if not has_key:
        return unauthorised()
    fault = state.faults.take(provider, streaming=False)
    if fault is not None and fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault is not None and fault.fails_up_front:
        return fault_response(fault)
    return None
