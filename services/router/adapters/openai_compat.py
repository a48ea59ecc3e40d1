"""OpenAI and OpenRouter: the wire format is already OpenAI's, so this only rewrites.

What changes on the way through: the model id (public ↔ upstream), usage is always requested
upstream when streaming (billing needs it) and only shown to clients who asked for it, and
upstream errors are reshaped into the status and body aig answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.adapters.base import (
    TokenUsage,
    UpstreamError,
    body_excerpt,
    error_object,
    make_upstream_error,
    parse_json_body,
)

# Fields only aig understands; upstreams reject unknown top-level fields.
AIG_ONLY_FIELDS = ("aig",)

# OpenRouter reports its own price in usage; that is aig's cost price, not the client's.
PROVIDER_USAGE_FIELDS = ("cost", "cost_details", "is_byok")


def build_chat_request(
    body: dict[str, Any], upstream_model: str, *, stream: bool
) -> dict[str, Any]:
    request = {key: value for key, value in body.items() if key not in AIG_ONLY_FIELDS}
    request["model"] = upstream_model
    if stream:
        request["stream"] = True
        options = request.get("stream_options")
        request["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    else:
        # OpenAI rejects stream_options unless stream is true.
        request.pop("stream", None)
        request.pop("stream_options", None)
    return request


def usage_from_openai(usage: Any) -> TokenUsage:
    if not isinstance(usage, dict):
        return TokenUsage()
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_prompt_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _public_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in usage.items() if key not in PROVIDER_USAGE_FIELDS}


def completion_from_response(
    payload: dict[str, Any], *, public_model: str
) -> tuple[dict[str, Any], TokenUsage]:
    completion = dict(payload)
    completion["model"] = public_model
    usage = completion.get("usage")
    if isinstance(usage, dict):
        completion["usage"] = _public_usage(usage)
    return completion, usage_from_openai(usage)


class ChatStreamRewriter:
    """Rewrites upstream chat.completion.chunk objects for the client, one at a time."""

    def __init__(self, public_model: str, client_wants_usage: bool) -> None:
        self.public_model = public_model
        self.client_wants_usage = client_wants_usage
        self.usage: TokenUsage | None = None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("error"):
            raise error_from_stream_payload(chunk)
        chunk = dict(chunk)
        chunk["model"] = self.public_model
        usage = chunk.pop("usage", None)
        choices = chunk.get("choices") or []
        out: list[dict[str, Any]] = []
        if choices:
            if self.client_wants_usage:
                chunk["usage"] = None
            out.append(chunk)
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
            if self.client_wants_usage:
                # Usage on a chunk that also has choices (some OpenRouter providers) is split
                # off into its own `choices: []` chunk, the shape the SDKs expect last.
                out.append({**chunk, "choices": [], "usage": _public_usage(usage)})
        return out


def error_from_stream_payload(payload: dict[str, Any]) -> UpstreamError:
    """An `{"error": …}` object received after HTTP 200 (OpenRouter sends these)."""
    error = error_object(payload) or {"message": str(payload.get("error"))}
    code = error.get("code")
    upstream_status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return make_upstream_error(
        upstream_status,
        str(error.get("message") or "upstream stream failed"),
        code=code if isinstance(code, str) else None,
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    error = error_object(parse_json_body(body))
    if error is None:
        return make_upstream_error(status, body_excerpt(body), headers=headers)
    code = error.get("code")
    param = error.get("param")
    error_type = error.get("type")
    return make_upstream_error(
        status,
        str(error.get("message") or ""),
        # OpenRouter puts the HTTP status in `code`; a string code is OpenAI's own.
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
        error_type=error_type if isinstance(error_type, str) and status not in (402, 529) else None,
        headers=headers,
    )
