"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}`.

The OpenAI SDKs pick the exception class from the HTTP status and read `type`, `param`
and `code` from the inner object, so every error aig returns is built here.
"""

from __future__ import annotations

from typing import Any

import orjson

ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    if status >= 500:
        return "server_error"
    return ERROR_TYPE_BY_STATUS.get(status, "invalid_request_error")


def error_body(
    message: str,
    *,
    status: int = 400,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "message": message,
        "type": error_type or error_type_for(status),
        "param": param,
        "code": code,
    }
    if extra:
        inner.update(extra)
    return {"error": inner}


def error_bytes(message: str, **kwargs: Any) -> bytes:
    return orjson.dumps(error_body(message, **kwargs))


class APIError(Exception):
    """An error that becomes an OpenAI-shaped HTTP response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(
            self.message,
            status=self.status,
            code=self.code,
            param=self.param,
            error_type=self.error_type,
            extra=self.extra,
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.body())
