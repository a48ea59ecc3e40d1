"""Mutable sandbox state shared by the provider routes and the control API."""

from __future__ import annotations

import base64
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.prompt_cache import PromptCache
from sandbox.renders import RenderBook
from sandbox.settings import SandboxSettings

PROVIDERS = ("openai", "openrouter", "azure", "anthropic", "google", "fal", "replicate")
ANY_PROVIDER = "*"

# Credentials never reach the request log, whatever the caller sent.
REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key"}
)
REDACTED = "[redacted]"


@dataclass(slots=True)
class Fault:
    """The next `remaining` calls to `provider` fail.

    With `after_chunks` unset the call fails up front with `status` in the provider's
    error shape. With `after_chunks` set only streaming calls are affected: they start
    normally and break after that many SSE events.
    """

    provider: str
    status: int = 500
    remaining: int = 1
    after_chunks: int | None = None
    message: str | None = None
    retry_after: int = 1
    # A slow provider: wait this long before answering. With status 200 the call then
    # succeeds, which is how tests make one provider slower than another (hedging).
    delay_ms: int = 0
    # A media render fault: the submission is accepted, and the render then fails with
    # `status` (the model's own error), instead of the call failing.
    render: bool = False

    @property
    def fails_up_front(self) -> bool:
        return self.status >= 400 and self.after_chunks is None

    def matches(self, provider: str, streaming: bool, render: bool = False) -> bool:
        if self.provider not in (provider, ANY_PROVIDER) or self.render != render:
            return False
        return self.after_chunks is None or streaming

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "count": self.remaining,
            "after_chunks": self.after_chunks,
            "message": self.message,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "render": self.render,
        }


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, provider: str, *, streaming: bool, render: bool = False) -> Fault | None:
        """Consume one use of the oldest fault that applies to this call (or, with
        `render`, to this media render)."""
        if not self._faults:  # the hot path: no faults configured
            return None
        for fault in self._faults:
            if fault.matches(provider, streaming, render):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def active(self) -> list[dict[str, Any]]:
        return [fault.as_dict() for fault in self._faults]


def redact_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    redacted: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        redacted[name] = REDACTED if name in REDACTED_HEADERS else raw_value.decode("latin-1")
    return redacted


def redact_query(query: str) -> str:
    if "key=" not in query:
        return query
    parts = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        parts.append(f"{name}={REDACTED}" if name == "key" and sep else pair)
    return "&".join(parts)


class RequestLog:
    """A bounded ring buffer of the provider calls received, oldest first."""

    def __init__(self, size: int) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(
        self,
        provider: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        body: Any,
    ) -> None:
        self._entries.append(
            {
                "provider": provider,
                "path": path,
                "query": redact_query(query),
                "headers": redact_headers(headers),
                "body": body,
                "at": time.time(),
            }
        )

    def entries(self, provider: str | None = None) -> list[dict[str, Any]]:
        if provider is None:
            return list(self._entries)
        return [entry for entry in self._entries if entry["provider"] == provider]

    def clear(self) -> None:
        self._entries.clear()

    def resize(self, size: int) -> None:
        if size != self._entries.maxlen:
            self._entries = deque(self._entries, maxlen=size)


@dataclass(slots=True)
class SandboxState:
    settings: SandboxSettings
    faults: FaultBook = field(default_factory=FaultBook)
    requests: RequestLog = field(init=False)
    renders: RenderBook = field(default_factory=RenderBook)
    # Anthropic's prompt cache, shared by every caller (the sandbox has one account).
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    # fal signs its webhooks with Ed25519 and publishes the public key in a JWKS.
    fal_signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    # Replicate signs its webhooks per Standard Webhooks with this account secret.
    replicate_webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )
    _http: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self.requests = RequestLog(self.settings.request_log_size)

    @property
    def http(self) -> httpx.AsyncClient:
        """The client that sends the simulators' webhooks (made on first use, in the
        server's event loop)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=15.0)
        return self._http
