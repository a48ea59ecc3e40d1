"""What a provider type is, and what one provider instance resolves to at run time.

A provider *type* is code: it knows one wire format (OpenAI's, Anthropic's, Gemini's) and
builds requests, translates answers and maps errors for it. A provider *instance* is data:
a catalog row (`catalog.models.ProviderRow`) plus the key its `key_env` names. The router's
core only ever asks an instance's type to do these things; it names no provider.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aig_common.errors import APIError
from aig_common.usage import TokenUsage
from catalog.models import EmbeddingModel, ProviderRow

from ..adapters.base import UpstreamError
from ..adapters.embeddings import EncodingFormat
from ..requests import Target, completion_id, wants_usage
from ..upstream import UpstreamReply

# The key sent to the sandbox: it checks that one is present, never which.
SANDBOX_KEY = "sandbox-key"


@dataclass(frozen=True, slots=True)
class ProviderInstance:
    """A catalog provider row resolved against the environment: where calls go, and how."""

    name: str
    type: str
    base_url: str
    api_key: str
    headers: tuple[tuple[str, str], ...]
    timeout_s: float | None
    api_version: str | None
    # The server has OpenAI's Responses API too (catalog row `responses_api`).
    responses_api: bool
    # True when the sandbox stands in because the row's key variable is unset.
    sandboxed: bool

    @classmethod
    def resolve(
        cls, row: ProviderRow, env: Mapping[str, str], sandbox_url: str
    ) -> ProviderInstance:
        key = env.get(row.key_env, "") if row.key_env else ""
        sandboxed = bool(row.key_env) and not key and row.sandbox_path is not None
        base_url = sandbox_url.rstrip("/") + (row.sandbox_path or "") if sandboxed else row.base_url
        override = env.get(row.base_url_env or base_url_variable(row.name))
        return cls(
            name=row.name,
            type=row.type,
            base_url=(override or base_url).rstrip("/"),
            api_key=key or (SANDBOX_KEY if sandboxed else ""),
            headers=row.headers,
            timeout_s=row.timeout_s,
            api_version=row.api_version,
            responses_api=row.responses_api,
            sandboxed=sandboxed,
        )


def base_url_variable(provider_name: str) -> str:
    """`AIG_<NAME>_BASE_URL`: the environment's override of a provider row's base_url."""
    return "AIG_" + re.sub(r"[^A-Za-z0-9]", "_", provider_name).upper() + "_BASE_URL"


class UpstreamRequest:
    """One provider's chat request plus the translators for its answer.

    The internal contract between the router's core (`chat.py`) and a provider type: the
    core POSTs `content` to `path`, then feeds the answer back through these methods and
    only ever sees OpenAI chat.completion / chat.completion.chunk objects and TokenUsage —
    or, for a `native` request, the provider's own answer and stream events in the client's
    dialect, passed on untranslated.
    """

    path: str
    content: bytes
    # Headers of this request alone (the instance's own are sent with every request).
    headers: Mapping[str, str] | None = None
    # True when answers and chunks are in the client's own dialect (a NativeCall served by
    # a provider that speaks it), not OpenAI's.
    native: ClassVar[bool] = False

    @staticmethod
    def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """The provider's answer with any status but 200, as the error aig answers with."""
        raise NotImplementedError

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        raise NotImplementedError

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        """One SSE event in, the OpenAI chunks it becomes out (often none)."""
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        """Chunks owed when the upstream closes the stream (for formats with no end marker)."""
        return []

    def is_done(self) -> bool:
        raise NotImplementedError

    def usage(self) -> TokenUsage | None:
        raise NotImplementedError

    def output_pieces(self, chunk: dict[str, Any]) -> list[tuple[tuple[int, int], str]]:
        """The output text a chunk carries, keyed by (choice, tool call or -1 for content):
        what a stream cut short is billed for when the provider never reported usage."""
        pieces: list[tuple[tuple[int, int], str]] = []
        for position, choice in enumerate(chunk.get("choices") or ()):
            index = choice.get("index", position)
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                pieces.append(((index, -1), content))
            thought = delta.get("reasoning_content")
            if thought:
                pieces.append(((index, -2), thought))
            for number, call in enumerate(delta.get("tool_calls") or ()):
                arguments = (call.get("function") or {}).get("arguments")
                if arguments:
                    pieces.append(((index, call.get("index", number)), arguments))
        return pieces


class StreamTranslator(Protocol):
    usage: TokenUsage | None


class TranslatedRequest(UpstreamRequest):
    """A request in a format other than OpenAI's, whose answer is rebuilt as OpenAI's: the
    answer's id, creation time and public model are fixed before the call."""

    translator: StreamTranslator

    @staticmethod
    def completion_from(
        payload: dict[str, Any], *, public_model: str, completion_id: str, created: int
    ) -> tuple[dict[str, Any], TokenUsage]:
        raise NotImplementedError

    def __init__(self, target: Target, body: dict[str, Any]) -> None:
        self.identity: dict[str, Any] = {
            "public_model": target.public_id,
            "completion_id": completion_id(),
            "created": int(time.time()),
        }
        self.include_usage = wants_usage(body)

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return self.completion_from(payload, **self.identity)

    def usage(self) -> TokenUsage | None:
        return self.translator.usage


# The client dialects a provider type may serve untranslated (router.proto NativeBody).
ANTHROPIC_MESSAGES = "anthropic.messages"
OPENAI_RESPONSES = "openai.responses"


@dataclass(frozen=True, slots=True)
class NativeCall:
    """The client's request in its own dialect, beside the chat body translated from it."""

    dialect: str
    body: dict[str, Any]
    # The client's headers the provider reads with the body (router.proto NativeBody).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A chat request for one member of the route chain, as a provider type receives it."""

    target: Target
    body: dict[str, Any]
    stream: bool
    # Images the router downloaded first (`image_urls_to_fetch`), by URL: (mime, bytes).
    images: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)
    # Set when the client spoke another dialect; a type that speaks it may send this instead.
    native: NativeCall | None = None


# POSTs a JSON body to a path of the instance being called.
Post = Callable[[str, dict[str, Any]], Awaitable[UpstreamReply]]


@dataclass(frozen=True, slots=True)
class EmbeddingsCall:
    """An embeddings request, already validated and parsed by `embed.py`."""

    model: EmbeddingModel
    body: dict[str, Any]
    inputs: list[str] | list[list[int]]
    requested_format: EncodingFormat
    dimensions: int | None


class ProviderType:
    """The code behind every instance of one API dialect; subclasses are stateless."""

    name: ClassVar[str]
    # Row options this type understands beyond the common ones.
    options: ClassVar[frozenset[str]] = frozenset()
    supports_embeddings: ClassVar[bool] = False

    def check_row(self, row: ProviderRow) -> None:
        """Refuses a row this type cannot serve (ValueError naming the row)."""
        if row.api_version is not None and "api_version" not in self.options:
            raise ValueError(f"provider '{row.name}': type '{row.type}' takes no 'api_version'")
        if row.responses_api and "responses_api" not in self.options:
            raise ValueError(f"provider '{row.name}': type '{row.type}' takes no 'responses_api'")

    def auth_headers(self, instance: ProviderInstance) -> dict[str, str]:
        return {"authorization": f"Bearer {instance.api_key}"} if instance.api_key else {}

    def image_urls_to_fetch(self, body: dict[str, Any]) -> list[str]:
        """Image URLs the router must download first (for APIs that take only inline bytes)."""
        return []

    def chat_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest:
        raise NotImplementedError

    def native_request(self, instance: ProviderInstance, call: ChatCall) -> UpstreamRequest | None:
        """The client's own request (`call.native`) for this instance, passed through, or
        None when this instance does not speak its dialect (the call is then translated)."""
        return None

    async def embed(
        self, instance: ProviderInstance, call: EmbeddingsCall, post: Post
    ) -> tuple[dict[str, Any], TokenUsage]:
        raise APIError(
            400,
            f"Provider '{instance.name}' serves no embeddings.",
            param="model",
            code="model_not_supported",
        )
