"""Steps every simulated provider call goes through."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from sandbox.state import SandboxState
from sandbox.transport import InvalidBody, read_json_object


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


def fragments(text: str, parts: int) -> list[str]:
    """Split tool-call arguments into `parts` pieces so clients must accumulate them."""
    if len(text) <= 1:
        return [text]
    step = max(1, -(-len(text) // parts))
    return [text[index : index + step] for index in range(0, len(text), step)]
