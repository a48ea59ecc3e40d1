"""Deterministic content: answer text, token counts, ids, embedding vectors.

Everything here is a pure function of its input, and cheap: the benchmarks measure the
gateway against this server, so the sandbox must not be the bottleneck.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
import uuid
from array import array
from functools import lru_cache

_WORDS = (
    *("gateway", "sandbox", "answer", "token", "stream", "provider", "model", "request"),
    *("reply", "simulated", "deterministic", "budget", "ledger", "latency", "router"),
    *("edge", "credit", "pool", "message", "content", "upstream", "chunk", "event"),
    *("usage", "schema", "vector", "image", "function", "argument", "result"),
)


def estimate_tokens(chars: int) -> int:
    """About four characters per token, and never zero."""
    return max(1, (chars + 3) // 4)


def short_hash(text: str, size: int = 4) -> str:
    return hashlib.blake2s(text.encode(), digest_size=size).hexdigest()


@lru_cache(maxsize=4096)
def filler(seed: str, tokens: int) -> str:
    """About `tokens` tokens of words chosen by `seed`."""
    digest = hashlib.shake_128(seed.encode()).digest(max(tokens, 1))
    words: list[str] = []
    chars = 0
    target = tokens * 4
    for byte in digest:
        word = _WORDS[byte % len(_WORDS)]
        words.append(word)
        chars += len(word) + 1
        if chars >= target:
            break
    return " ".join(words)


def split_text(text: str, parts: int) -> list[str]:
    """Cut `text` into at most `parts` non-empty pieces that join back to it."""
    if not text:
        return [""]
    parts = max(1, min(parts, len(text)))
    step = math.ceil(len(text) / parts)
    return [text[start : start + step] for start in range(0, len(text), step)]


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def stable_id(prefix: str, seed: str) -> str:
    return f"{prefix}{short_hash(seed, 12)}"


@lru_cache(maxsize=2048)
def embedding(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector of `dimensions` floats derived from a hash of `text`."""
    raw = hashlib.shake_256(text.encode()).digest(dimensions * 2)
    ints = array("h", raw)
    norm = math.sqrt(sum(value * value for value in ints)) or 1.0
    # Rounded to float32 precision so the float and base64 encodings agree.
    return tuple(array("f", [value / norm for value in ints]))


@lru_cache(maxsize=2048)
def embedding_base64(text: str, dimensions: int) -> str:
    """The same vector as little-endian float32 bytes, standard base64, as OpenAI sends it."""
    floats = array("f", embedding(text, dimensions))
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")
