"""Real token counts for models whose tokenizer is public (OpenAI's), for billing a stream
whose provider never reported usage (the client left first; docs/architecture.md, billing
rules). Other models (Claude, Gemini, open models served by others) have no tokenizer we
can run, so their callers keep `catalog.estimate`'s ~4 bytes per token.

The encodings are OpenAI's BPE vocabularies (`o200k_base`, `cl100k_base`) as shipped inside
the `bpe-openai` wheel: no download at first use, so an air-gapped install counts the same.
A vocabulary costs tens of MB once loaded, and counts are rare (only abandoned streams), so
nothing is imported or loaded until the first count (bench/tokenizer.py measures both).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from catalog.estimate import chat_messages

if TYPE_CHECKING:
    from catalog.models import ChatModel

O200K = "o200k_base"
CL100K = "cl100k_base"
# OpenAI's chat format: each message is wrapped as <|start|>{role}<|message|>{content}<|end|>
# (3 tokens beside the role and content), a `name` costs one token more, and every reply is
# primed with <|start|>assistant<|message|> (3 tokens). These are the figures OpenAI's
# cookbook ("How to count tokens with tiktoken") uses for gpt-3.5-turbo-0613 onwards and the
# gpt-4o family.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_REPLY = 3
# The backend refuses texts of 1,000,000 characters or more and results over 200,000
# tokens; longer texts are counted in pieces of at most this many characters.
PIECE_CHARS = 200_000
# Models of OpenAI's before gpt-4o use cl100k_base; everything since (gpt-4o, gpt-4.1,
# gpt-5, the o-series, gpt-oss) uses o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5")
_CL100K_IDS = frozenset({"gpt-4", "gpt-4-turbo", "gpt-4-32k"})


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def encoding_name(model: ChatModel) -> str | None:
    """The BPE encoding `model` counts with, or None when its tokenizer is not public."""
    if model.owned_by != "openai":
        return None
    name = model.id.lower().removeprefix("openai/")
    if name in _CL100K_IDS or name.startswith(_CL100K_PREFIXES):
        return CL100K
    return O200K


@functools.cache
def _encoding(name: str) -> _Encoding:
    # Imported here, not at module load: the router pays for the library and the vocabulary
    # only once a count is needed.
    import bpe_openai

    encoding: _Encoding = bpe_openai.get_encoding(name)
    return encoding


def count_text(encoding: str, text: str) -> int:
    """Tokens of `text` in `encoding`, special-token strings counted as plain text."""
    if not text:
        return 0
    return sum(_count_piece(encoding, piece) for piece in _pieces(text, PIECE_CHARS))


def _count_piece(encoding: str, piece: str) -> int:
    import bpe_openai

    try:
        return len(_encoding(encoding).encode_ordinary(piece))
    except bpe_openai.TokenLimitError:
        # Over the backend's tokens per call (rare scripts, emoji runs): count in halves.
        return sum(_count_piece(encoding, half) for half in _pieces(piece, len(piece) // 2))


def _pieces(text: str, size: int) -> Iterable[str]:
    """`text` cut into pieces of at most `size` characters, each cut where the encodings'
    pre-tokenizer splits anyway (before a space that follows a non-space), so the sum of the
    pieces' counts is the count of the whole; a piece with no such place is cut at `size`
    (the count may then be off by a token or two at the cut)."""
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = end
        while cut > start + 1 and not (text[cut] == " " and not text[cut - 1].isspace()):
            cut -= 1
        if cut <= start + 1:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def chat_prompt_tokens(body: dict[str, Any], model: ChatModel) -> int | None:
    """The prompt of a chat request as OpenAI counts it, or None when `model` has no public
    tokenizer.

    Per message: the format's overhead, the role, the content (a string, or the text parts
    of a list; each image at the model's `image_input_tokens`, a fixed figure, since the
    image's own tile count is not known here), a `name` and one token for it; anything else
    a message carries (tool calls, a tool call id) and the request's tool definitions and
    response format count as the tokens of their JSON (OpenAI renders them in a format of
    its own, which is not published; JSON is within a few tokens of it)."""
    encoding = encoding_name(model)
    if encoding is None:
        return None
    total = TOKENS_PER_REPLY
    images = 0
    for message in chat_messages(body):
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                text_tokens, message_images = _content_tokens(encoding, value)
                total += text_tokens
                images += message_images
            else:
                total += _value_tokens(encoding, value)
                if key == "name":
                    total += TOKENS_PER_NAME
    for param in ("tools", "functions", "response_format"):
        if body.get(param):
            total += _value_tokens(encoding, body[param])
    return total + images * model.image_input_tokens


def output_tokens(model: ChatModel, texts: Iterable[str]) -> int | None:
    """Tokens of the output produced (each choice's text, each tool call's arguments), or
    None when `model` has no public tokenizer."""
    encoding = encoding_name(model)
    if encoding is None:
        return None
    return sum(count_text(encoding, text) for text in texts)


def _content_tokens(encoding: str, content: Any) -> tuple[int, int]:
    """(text tokens, images) of a message's content."""
    if content is None:
        return 0, 0
    if not isinstance(content, list):
        return _value_tokens(encoding, content), 0
    tokens = images = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            images += 1
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            tokens += count_text(encoding, part["text"])
        else:
            tokens += _value_tokens(encoding, part)
    return tokens, images


def _value_tokens(encoding: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return count_text(encoding, value)
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = str(value)
    return count_text(encoding, text)
