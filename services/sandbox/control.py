"""Control API for tests and demos: faults, the request log, settings, a sample image."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.images import SAMPLE_PNG
from sandbox.state import ANY_PROVIDER, PROVIDERS, Fault, SandboxState
from sandbox.transport import InvalidBody, json_response, read_json_object


def _problem(message: str, status: int = 400) -> Response:
    return json_response({"error": {"message": message}}, status)


def fault_from(body: dict[str, Any]) -> Fault:
    """Validate a `POST /_sandbox/faults` body; raises ValueError with a readable reason."""
    provider = body.get("provider", ANY_PROVIDER)
    if provider not in (*PROVIDERS, ANY_PROVIDER):
        raise ValueError(f"provider must be one of {[*PROVIDERS, ANY_PROVIDER]}")
    status = body.get("status", 500)
    count = body.get("count", 1)
    after_chunks = body.get("after_chunks")
    retry_after = body.get("retry_after", 1)
    message = body.get("message")
    delay_ms = body.get("delay_ms", 0)
    render = body.get("render", False)
    if not isinstance(render, bool):
        raise ValueError("render must be a boolean")
    if not _is_int(delay_ms) or not 0 <= delay_ms <= 600_000:
        raise ValueError("delay_ms must be an integer between 0 and 600000")
    slow_only = status == 200 and delay_ms > 0
    if not _is_int(status) or not (400 <= status <= 599 or slow_only):
        raise ValueError("status must be an integer between 400 and 599 (or 200 with delay_ms)")
    if not _is_int(count) or count < 1:
        raise ValueError("count must be a positive integer")
    if after_chunks is not None and (not _is_int(after_chunks) or after_chunks < 0):
        raise ValueError("after_chunks must be null or a non-negative integer")
    if not _is_int(retry_after) or retry_after < 0:
        raise ValueError("retry_after must be a non-negative integer")
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a string")
    return Fault(provider, status, count, after_chunks, message, retry_after, delay_ms, render)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def routes(state: SandboxState) -> list[Route]:
    async def add_fault(request: Request) -> Response:
        try:
            state.faults.add(fault_from(await read_json_object(request)))
        except (InvalidBody, ValueError) as exc:
            return _problem(str(exc))
        return json_response({"data": state.faults.active()})

    async def list_faults(request: Request) -> Response:
        return json_response({"data": state.faults.active()})

    async def clear_faults(request: Request) -> Response:
        state.faults.clear()
        return json_response({"data": []})

    async def list_requests(request: Request) -> Response:
        provider = request.query_params.get("provider") or None
        return json_response({"data": state.requests.entries(provider)})

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        return json_response({"data": []})

    async def read_config(request: Request) -> Response:
        return json_response(state.settings.as_dict())

    async def change_config(request: Request) -> Response:
        try:
            changes = await read_json_object(request)
            if {"host", "port"} & changes.keys():
                raise ValueError("host and port cannot change at run time")
            state.settings.update(changes)
        except (InvalidBody, ValueError, TypeError) as exc:
            return _problem(str(exc))
        state.requests.resize(state.settings.request_log_size)
        return json_response(state.settings.as_dict())

    async def reset(request: Request) -> Response:
        state.faults.clear()
        state.requests.clear()
        state.renders.clear()
        return json_response({"status": "ok"})

    async def sample_image(request: Request) -> Response:
        return Response(SAMPLE_PNG, media_type="image/png")

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    return [
        Route("/_sandbox/faults", add_fault, methods=["POST"]),
        Route("/_sandbox/faults", list_faults, methods=["GET"]),
        Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/_sandbox/requests", list_requests, methods=["GET"]),
        Route("/_sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/_sandbox/config", read_config, methods=["GET"]),
        Route("/_sandbox/config", change_config, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/image.png", sample_image, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
