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


def model_not_found(model_id: object, *, param: str = "model", status: int = 404) -> APIError:
    """The one answer for a model id the catalog does not know (OpenAI's wording and code)."""
    return APIError(
        status,
        f"The model `{model_id}` does not exist or you do not have access to it.",
        param=param,
        code="model_not_found",
    )


_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """How OpenAI names a JSON value's type in its error messages ("an array", "null")."""
    return _TYPE_NAMES.get(type(value), "an unsupported value")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or a 400 `invalid_json` saying why not."""
    if not raw:
        raise APIError(
            400, "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(
            400,
            f"We could not parse the JSON body of your request ({exc.msg}).",
            code="invalid_json",
        ) from exc
    if not isinstance(body, dict):
        raise APIError(
            400,
            f"The request body must be a JSON object, not {json_type(body)}.",
            code="invalid_json",
        )
    return body
