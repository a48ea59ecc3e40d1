"""What a stream is billed for when it ends, runs to its end or is cut short (billing rules in
docs/architecture.md): the provider's usage when it reported it all, else the prompt and what
was produced."""

from __future__ import annotations

from catalog.estimate import estimate_prompt_tokens, likely_prompt_tokens
from router.adapters.base import TokenUsage
from router.chat import _stream_usage

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me a story."}]}
PROMPT = likely_prompt_tokens(BODY)


def test_a_finished_stream_is_billed_on_the_providers_usage_exactly() -> None:
    reported = TokenUsage(prompt_tokens=7, completion_tokens=3, cached_prompt_tokens=2)
    assert _stream_usage(reported, True, BODY, streamed_chars=400) == reported


def test_a_stream_left_before_any_usage_pays_for_the_prompt_and_the_output_seen() -> None:
    # Left right after the first (role-only) chunk: nothing produced yet, the prompt was read.
    assert _stream_usage(None, False, BODY, streamed_chars=0) == TokenUsage(
        prompt_tokens=PROMPT, completion_tokens=0
    )
    assert PROMPT > 0
    assert _stream_usage(None, False, BODY, streamed_chars=41) == TokenUsage(
        prompt_tokens=PROMPT, completion_tokens=11
    )


def test_partial_provider_figures_are_topped_up_by_what_was_streamed() -> None:
    # Anthropic's message_start: the real prompt, one output token so far.
    early = TokenUsage(prompt_tokens=12, completion_tokens=1, cached_prompt_tokens=4)
    assert _stream_usage(early, False, BODY, streamed_chars=80) == TokenUsage(
        prompt_tokens=12, completion_tokens=20, cached_prompt_tokens=4
    )
    # A provider that counted more than we saw keeps its own figure.
    assert _stream_usage(
        TokenUsage(prompt_tokens=0, completion_tokens=50), False, BODY, streamed_chars=8
    ) == TokenUsage(prompt_tokens=PROMPT, completion_tokens=50)


def test_the_billing_estimate_is_central_and_below_the_reservations() -> None:
    # "Tell me a story." is 16 bytes: 4 tokens of text, 3 for the message, 3 for the reply.
    assert PROMPT == 10
    assert estimate_prompt_tokens(BODY) > PROMPT
