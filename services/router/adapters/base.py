"""Types every adapter shares."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aig_common.errors import APIError, error_body
from aig_common.usage import TokenUsage


@dataclass(slots=True)
class UpstreamError(Exception):
    """An upstream failure, already mapped to the status and body aig answers with.

    `body` is OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
    `headers` holds what the client should see (e.g. retry-after on a 429).
    `upstream_status` keeps what the provider really said (e.g. 529), for failover and logs.
    """

    status: int
    body: dict[str, Any]
    upstream_status: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        message = self.body.get("error", {}).get("message", "")
        return f"upstream error {self.upstream_status or self.status}: {message}"


# --- Helpers shared by the chat adapters -------------------------------------------------

# Headers a client's SDK reads to decide when to retry; everything else upstream sends is
# provider-internal and stays behind the gateway.
RETRY_HEADERS = ("retry-after", "retry-after-ms")


def client_status_for(upstream_status: int) -> int:
    """The status aig answers with for an upstream failure status."""
    if upstream_status == 529:
        # Anthropic's "overloaded"; OpenAI clients know 503 and retry it the same way.
        return 503
    if upstream_status == 402:
        # The upstream account is aig's, not the caller's: a 402 would tell the caller
        # that *their* aig balance is exhausted.
        return 502
    if 400 <= upstream_status <= 599:
        return upstream_status
    return 502


def make_upstream_error(
    upstream_status: int,
    message: str,
    *,
    status: int | None = None,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> UpstreamError:
    """Build an UpstreamError with OpenAI's error body, keeping the retry hints."""
    client_status = status if status is not None else client_status_for(upstream_status)
    kept: dict[str, str] = {}
    if headers is not None and (client_status == 429 or client_status >= 500):
        for name in RETRY_HEADERS:
            value = _header(headers, name)
            if value is not None:
                kept[name] = value
    body = error_body(
        message or f"upstream returned HTTP {upstream_status}",
        status=client_status,
        code=code,
        param=param,
        error_type=error_type,
    )
    return UpstreamError(
        status=client_status, body=body, upstream_status=upstream_status, headers=kept
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def parse_json_body(body: bytes) -> Any:
    """Parse an upstream body, or return None when it is not JSON (proxies send HTML)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.S
)


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """Split a base64 data URL into (media type, base64 payload)."""
    match = DATA_URL.match(url)
    if match is None or ";base64" not in match["params"].lower() or not match["data"]:
        raise APIError(
            400,
            "Image URL must be http(s) or a base64 data URL (data:image/png;base64,...).",
            param=param,
        )
    return match["mime"].lower(), match["data"].strip()


def error_object(payload: Any) -> dict[str, Any] | None:
    """The `error` object of an error body; streams may wrap the body in an array."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return payload["error"]
    return None


def body_excerpt(body: bytes, limit: int = 300) -> str:
    return body[:limit].decode("utf-8", errors="replace").strip()


def text_of_content(content: Any) -> str:
    """Join an OpenAI message `content` that is a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)
    return ""


class ChunkFactory:
    """Builds chat.completion.chunk objects that all repeat id, created and model."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool):
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage

    def chunk(
        self, delta: dict[str, Any], *, index: int = 0, finish_reason: str | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, usage: TokenUsage) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.as_openai(),
        }


def completion_object(
    *,
    completion_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: TokenUsage,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage.as_openai(),
    }


def assistant_choice(
    *, index: int, text: str, tool_calls: list[dict[str, Any]], finish_reason: str
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content next to tool calls and "" never; keep that shape.
        "content": text if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}
