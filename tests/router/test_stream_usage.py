"""What a stream is billed for when it ends, runs to its end or is cut short (billing rules in
docs/architecture.md): the provider's usage when it reported it all, else the prompt and what
was produced, counted with the model's real tokenizer where it is public (OpenAI's) and
estimated from the request's size for the others.

Expected figures are worked out here by hand from facts about the encodings (each pinned in
tests/router/test_tokenizer.py): " hello" is one token in o200k_base and cl100k_base,
"안녕하세요" is 2 tokens in o200k_base and 5 in cl100k_base, "user" is one token."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from catalog.estimate import estimate_prompt_tokens
from catalog.models import ChatModel, load_catalog
from router.adapters.base import TokenUsage
from router.chat import Produced, _stream_usage
from router.providers import UpstreamRequest

CATALOG = load_catalog()


def _model(model_id: str) -> ChatModel:
    model = CATALOG.chat(model_id)
    assert model is not None, model_id
    return model


GPT_4O_MINI = _model("gpt-4o-mini")
GPT_35 = _model("gpt-3.5-turbo")
CLAUDE = _model("claude-sonnet-4-5")

# 100 tokens of text in 600 bytes: the byte estimate (4 per token) says 150.
HELLOS = " hello" * 100
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": HELLOS}]}
# OpenAI's chat format: 3 tokens per message + role + content, 3 to prime the reply.
REAL_PROMPT = 3 + 1 + 100 + 3
# likely_prompt_tokens: 3 per message, 3 per request, 600 bytes at 4 per token.
ESTIMATED_PROMPT = 3 + 3 + 150


def streamed(*pieces: str, tool_arguments: tuple[str, ...] = ()) -> Produced:
    """What a stream sent: content deltas, then tool-call argument deltas, as chunks."""
    produced = Produced()
    # An OpenAI-format request's reading of its chunks (every translated request's).
    read = UpstreamRequest().output_pieces
    produced.add(read({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
    for piece in pieces:
        produced.add(read({"choices": [{"index": 0, "delta": {"content": piece}}]}))
    for piece in tool_arguments:
        call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
        produced.add(read({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
    return produced


def test_a_finished_stream_is_billed_on_the_providers_usage_exactly() -> None:
    reported = TokenUsage(prompt_tokens=7, completion_tokens=3, cached_prompt_tokens=2)
    assert _stream_usage(reported, True, BODY, streamed("x" * 400), GPT_4O_MINI) == reported


def test_an_openai_stream_left_early_pays_the_real_token_counts() -> None:
    # Left right after the first (role-only) chunk: nothing produced yet, the prompt was read.
    assert _stream_usage(None, False, BODY, streamed(), GPT_4O_MINI) == TokenUsage(
        prompt_tokens=REAL_PROMPT, completion_tokens=0
    )
    # 30 " hello"s in pieces that split words: 30 tokens, not 180 characters / 4 = 45.
    text = " hello" * 30
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    assert _stream_usage(None, False, BODY, streamed(*pieces), GPT_4O_MINI) == TokenUsage(
        prompt_tokens=REAL_PROMPT, completion_tokens=30
    )
    assert REAL_PROMPT != ESTIMATED_PROMPT


def test_the_encoding_follows_the_model_cjk_text() -> None:
    # 20 times "안녕하세요" is 300 bytes: 40 tokens in o200k_base (gpt-4o), 100 in cl100k_base
    # (gpt-3.5-turbo); the byte estimate would say 75 for both.
    body = {"model": "x", "messages": [{"role": "user", "content": "안녕하세요" * 20}]}
    assert _stream_usage(None, False, body, streamed("안녕하세요"), GPT_4O_MINI) == TokenUsage(
        prompt_tokens=3 + 1 + 40 + 3, completion_tokens=2
    )
    assert _stream_usage(None, False, body, streamed("안녕하세요"), GPT_35) == TokenUsage(
        prompt_tokens=3 + 1 + 100 + 3, completion_tokens=5
    )


def test_tool_call_arguments_count_as_output() -> None:
    # The arguments arrive in two deltas of one call and are counted as one text.
    arguments = '{"q":"' + " hello" * 12 + '"}'
    produced = streamed(" hello" * 5, tool_arguments=(arguments[:9], arguments[9:]))
    usage = _stream_usage(None, False, BODY, produced, GPT_4O_MINI)
    # '{"q":"' is 3 tokens in o200k_base ('{"', 'q', '":"'), '"}' is one: 12 + 4.
    assert usage.completion_tokens == 5 + 12 + 4


def test_a_claude_stream_left_early_keeps_the_byte_estimate() -> None:
    text = " hello" * 30
    assert _stream_usage(None, False, BODY, streamed(text), CLAUDE) == TokenUsage(
        prompt_tokens=ESTIMATED_PROMPT, completion_tokens=45
    )


def test_partial_provider_figures_are_topped_up_by_what_was_streamed() -> None:
    # Anthropic's message_start: the real prompt, one output token so far; 80 characters
    # streamed are 20 tokens by the estimate.
    early = TokenUsage(prompt_tokens=12, completion_tokens=1, cached_prompt_tokens=4)
    assert _stream_usage(early, False, BODY, streamed("abcd" * 20), CLAUDE) == TokenUsage(
        prompt_tokens=12, completion_tokens=20, cached_prompt_tokens=4
    )
    # A provider that counted more than we saw keeps its own figure; a missing prompt is
    # counted.
    assert _stream_usage(
        TokenUsage(prompt_tokens=0, completion_tokens=50),
        False,
        BODY,
        streamed(" hello"),
        GPT_4O_MINI,
    ) == TokenUsage(prompt_tokens=REAL_PROMPT, completion_tokens=50)


def test_the_billing_count_is_below_the_reservations() -> None:
    assert estimate_prompt_tokens(BODY) > REAL_PROMPT
    assert estimate_prompt_tokens(BODY) > ESTIMATED_PROMPT


def test_the_vocabulary_is_loaded_only_when_a_count_is_needed() -> None:
    """The router imports the tokenizer's library and vocabulary at the first abandoned
    stream, not at start nor for streams the provider reported."""
    script = """
import sys
from catalog.models import ChatModel, load_catalog
from router.adapters.base import TokenUsage
from router.chat import Produced, _stream_usage
from router.providers import UpstreamRequest
model = load_catalog().chat("gpt-4o-mini")
body = {"messages": [{"role": "user", "content": "hi"}]}
print("bpe_openai" in sys.modules)
_stream_usage(TokenUsage(prompt_tokens=1, completion_tokens=1), True, body, Produced(), model)
print("bpe_openai" in sys.modules)
_stream_usage(None, False, body, Produced(), model)
print("bpe_openai" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["False", "False", "True"]
