"""Anthropic-shaped errors: `{"type": "error", "error": {"type", "message"}, "request_id"}`.

The Anthropic SDKs pick the exception class from the HTTP status alone (402 is
`PaymentRequiredError`, 529 `OverloadedError`), so statuses stay exactly those of the chat
route; only the body changes dialect. A 402 keeps aig's `code` and the limit that was hit
(`metadata`) inside `error`, as chat's does.
"""

from __future__ import annotations

from typing import Any

import orjson

from aig_common.errors import APIError

# Requests under this path answer errors in Anthropic's shape, whichever layer raised them.
PATH_PREFIX = "/v1/messages"

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_object(
    status: int, message: str, code: str | None = None, metadata: Any = None
) -> dict[str, Any]:
    """The inner `error` object. Only a 402 carries aig's `code` and `metadata`: they say
    which limit was hit, and Anthropic's clients ignore fields they do not know."""
    inner: dict[str, Any] = {"type": error_type_for(status), "message": message}
    if status == 402:
        inner["code"] = code
        if metadata is not None:
            inner["metadata"] = metadata
    return inner


def error_bytes(status: int, inner: dict[str, Any], request_id: str) -> bytes:
    return orjson.dumps({"type": "error", "error": inner, "request_id": request_id or None})


def from_api_error(exc: APIError, request_id: str) -> bytes:
    metadata = (exc.extra or {}).get("metadata")
    return error_bytes(
        exc.status, error_object(exc.status, exc.message, exc.code, metadata), request_id
    )


def from_openai_body(status: int, body: bytes, request_id: str) -> bytes:
    """Re-shapes an OpenAI-shaped error (the router's replies) into Anthropic's."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "The upstream provider failed."
    code = error.get("code") if isinstance(error.get("code"), str) else None
    return error_bytes(
        status, error_object(status, message, code, error.get("metadata")), request_id
    )
