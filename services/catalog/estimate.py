"""Worst-case size of a request, before any provider has counted it.

Used for spend reservations (the edge) and as the fallback when a provider reports no
usage (the router), so every estimate errs high.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from catalog.models import DEFAULT_IMAGE_INPUT_TOKENS, ChatModel

MAX_OUTPUT_PARAMS = ("max_completion_tokens", "max_tokens")
# Chat templates wrap every message in role markers (OpenAI documents ~3-4 tokens, other
# templates a few more); the request as a whole gets a priming sequence.
TOKENS_PER_MESSAGE = 8
TOKENS_PER_REQUEST = 16
# BPE vocabularies average ~4 bytes of English per token; 3 leaves headroom for code, digits
# and non-Latin scripts (a CJK character is 3 UTF-8 bytes and usually about one token).
BYTES_PER_TOKEN = 3
# The central estimate (likely_prompt_tokens), where erring high would overcharge.
LIKELY_BYTES_PER_TOKEN = 4
LIKELY_TOKENS_PER_MESSAGE = 3
LIKELY_TOKENS_PER_REQUEST = 3


def requested_max_output_tokens(body: dict[str, Any]) -> int | None:
    """The client's output limit; `max_completion_tokens` wins over the deprecated `max_tokens`.

    Call after `check_chat_request`, which rejects values that are not positive integers.
    """
    for param in MAX_OUTPUT_PARAMS:
        value = body.get(param)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def worst_case_output_tokens(body: dict[str, Any], model: ChatModel) -> int:
    """The most output tokens a call may produce: the client's limit, else the model's."""
    requested = requested_max_output_tokens(body)
    if requested is None:
        return model.max_output_tokens
    return min(requested, model.max_output_tokens)


@dataclass(frozen=True, slots=True)
class PromptSize:
    """A request's prompt, sized once: text tokens (over-estimated) and images, which each
    model prices at its own `image_input_tokens`."""

    text_tokens: int
    images: int

    def tokens(self, tokens_per_image: int = DEFAULT_IMAGE_INPUT_TOKENS) -> int:
        return self.text_tokens + self.images * tokens_per_image


def prompt_size(body: dict[str, Any]) -> PromptSize:
    """A cheap over-estimate of the prompt a chat request will be billed for.

    Used for worst-case spend reservations, so it errs high: text at one token per
    BYTES_PER_TOKEN UTF-8 bytes, everything else (tool definitions, tool calls, schemas) at
    the size of its JSON. It is a heuristic, not a tokenizer: adversarial text such as
    punctuation-separated digits can still tokenize denser than this.
    """
    total_bytes, image_count, message_count = _prompt_parts(body)
    text_tokens = -(-total_bytes // BYTES_PER_TOKEN)
    return PromptSize(
        text_tokens=TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE * message_count + text_tokens,
        images=image_count,
    )


def likely_prompt_tokens(
    body: dict[str, Any], *, tokens_per_image: int = DEFAULT_IMAGE_INPUT_TOKENS
) -> int:
    """A central estimate of the prompt, for billing a stream whose provider never reported
    usage (the client left first): what the provider most likely counted, not an upper
    bound, so the customer is not charged the reservation's safety margin. English averages
    about 4 UTF-8 bytes per token; OpenAI's chat format adds about 3 tokens per message and
    3 for the reply's priming."""
    total_bytes, image_count, message_count = _prompt_parts(body)
    return (
        LIKELY_TOKENS_PER_REQUEST
        + LIKELY_TOKENS_PER_MESSAGE * message_count
        + -(-total_bytes // LIKELY_BYTES_PER_TOKEN)
        + image_count * tokens_per_image
    )


def _prompt_parts(body: dict[str, Any]) -> tuple[int, int, int]:
    """(bytes of text and JSON, images, messages) of a chat request's prompt."""
    total_bytes = 0
    image_count = 0
    messages = chat_messages(body)
    for message in messages:
        for key, value in message.items():
            if key == "content":
                content_bytes, images = _content_size(value)
                total_bytes += content_bytes
                image_count += images
            elif key != "role":
                total_bytes += _json_size(value)
    for param in ("tools", "functions", "response_format"):
        if body.get(param):
            total_bytes += _json_size(body[param])
    return total_bytes, image_count, len(messages)


def estimate_prompt_tokens(
    body: dict[str, Any], *, tokens_per_image: int = DEFAULT_IMAGE_INPUT_TOKENS
) -> int:
    """`prompt_size(body)` in tokens, with images at `tokens_per_image` (pass the model's)."""
    return prompt_size(body).tokens(tokens_per_image)


def _content_size(content: Any) -> tuple[int, int]:
    """(UTF-8 bytes of text, number of images) in a message's content."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return len(content.encode()), 0
    if not isinstance(content, list):
        return _json_size(content), 0
    size = images = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            # The image's own bytes (often a base64 data URL) are not prompt text.
            images += 1
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            size += len(part["text"].encode())
        else:
            size += _json_size(part)
    return size, images


def _json_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(str(value).encode())


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    # Shape validation is the edge's job; here malformed entries are simply not ours to judge.
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]
