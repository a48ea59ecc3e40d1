"""The contract every media provider type meets, so the jobs service names no provider.

A provider *type* (fal's queue API, Replicate's predictions API, OpenAI's images API) is one
module under `jobs/providers/` with a class implementing `MediaProvider`; a provider
*instance* is a row of configuration (`name`, `type`, `base_url`, `key_env`) that the
catalog's media models name. The jobs service only ever calls these four methods.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class ProviderState(enum.Enum):
    """Where a provider says a task is; the jobs service maps these onto Kie's states."""

    QUEUED = "queued"  # accepted, waiting for a worker        -> queuing
    RUNNING = "running"  # rendering                            -> generating
    SUCCEEDED = "succeeded"  # done; `result_urls` are set     -> success (after copying)
    FAILED = "failed"  # failed, cancelled or aborted            -> fail


@dataclass(frozen=True)
class ProviderInstance:
    """One configured provider: data, not code."""

    name: str  # e.g. "fal", "replicate", "openai-images"
    type: str  # the module's `PROVIDER_TYPE`
    base_url: str
    api_key: str = ""  # read from the instance's key_env; empty when simulated
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaSubmission:
    """What the jobs service hands a provider: one aig task."""

    task_id: str  # aig's id; the provider-side idempotency key where one exists
    upstream_model: str  # the model id as the provider names it
    input: dict[str, Any]  # the validated createTask input
    # Where the provider should POST its own completion callback (None: poll only).
    callback_url: str | None = None


@dataclass(frozen=True)
class ProviderStatus:
    state: ProviderState
    provider_task_id: str
    result_urls: tuple[str, ...] = ()
    fail_code: str = ""
    fail_message: str = ""
    # Provider-reported units actually produced (e.g. seconds of video), when it says.
    units: int | None = None


@dataclass(frozen=True)
class ResultFile:
    """One result, downloaded from the provider (or decoded from an inline data URL)."""

    data: bytes
    content_type: str


class ProviderError(Exception):
    """A provider call failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class MediaProvider(Protocol):
    instance: ProviderInstance
    # Whether the protocol itself deduplicates two submissions of one task_id (an
    # idempotency key upstream). When False, as for fal, Replicate and OpenAI images, the
    # jobs service must guard with its database: record that a submission may have been
    # sent before calling `submit`, and never call it again for that task.
    idempotent_submit: ClassVar[bool]

    async def submit(self, submission: MediaSubmission) -> ProviderStatus:
        """Starts the task upstream (using the provider's idempotency key where it has
        one). A synchronous upstream may answer SUCCEEDED at once."""
        ...

    async def poll(self, provider_task_id: str, upstream_model: str) -> ProviderStatus:
        """The task's current state upstream."""
        ...

    async def parse_callback(self, headers: dict[str, str], body: bytes) -> ProviderStatus:
        """Verifies and reads a provider's callback (raises `ProviderError` when the
        signature or shape is wrong). Never trusted without verification. Async because
        verifying may need the provider's current public keys (fal's JWKS)."""
        ...

    async def fetch_result(self, url: str) -> ResultFile:
        """Downloads one of `ProviderStatus.result_urls` (some need the provider's
        credentials, some are inline `data:` URLs)."""
        ...

    async def cancel(self, provider_task_id: str, upstream_model: str) -> None:
        """Best effort: asks the provider to stop (used when a task passes its deadline)."""
        ...

    async def aclose(self) -> None:
        """Releases the adapter's HTTP connections."""
        ...
