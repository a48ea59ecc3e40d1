"""Run-time knobs of the sandbox, read from `AIG_SANDBOX_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(slots=True)
class SandboxSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    # Delay before the first byte of every provider response.
    latency_ms: int = 0
    # Gap between two streamed events.
    chunk_interval_ms: int = 0
    # Approximate length of a text answer, in tokens (~4 characters each).
    answer_tokens: int = 40
    # How many content chunks a streamed text answer is split into.
    stream_chunks: int = 8
    # Tokens a text answer runs past the request's max_tokens, as a provider that ignores
    # the limit would (tests of the gateway's billing clamp). 0 honours the limit.
    max_tokens_overrun: int = 0
    # How many provider requests `GET /_sandbox/requests` remembers.
    request_log_size: int = 500
    # Media renders (fal, Replicate): time in the queue, then time rendering.
    media_queue_ms: int = 100
    media_render_ms: int = 1000
    # How often a media webhook is tried before the simulator gives up.
    webhook_attempts: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxSettings:
        env = os.environ if environ is None else environ
        settings = cls()
        for field in fields(cls):
            raw = env.get(f"AIG_SANDBOX_{field.name.upper()}")
            if raw is not None and raw != "":
                settings.update({field.name: raw})
        return settings

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` (values may be strings from the environment); unknown keys raise."""
        known = {field.name: field for field in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            if isinstance(getattr(self, name), int):
                number = int(value)
                if number < 0:
                    raise ValueError(f"{name} must be >= 0")
                setattr(self, name, number)
            else:
                setattr(self, name, str(value))
        self.stream_chunks = max(1, self.stream_chunks)
        self.answer_tokens = max(1, self.answer_tokens)
        self.request_log_size = max(1, self.request_log_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
