"""Token counts with OpenAI's real encodings (catalog.tokenizer), checked against published
figures: token ids from tiktoken's own test suite and README, and the chat-format counts of
OpenAI's cookbook ("How to count tokens with tiktoken"), which the OpenAI API confirmed."""

from __future__ import annotations

import bpe_openai

from catalog.models import ChatModel, load_catalog
from catalog.tokenizer import (
    CL100K,
    O200K,
    PIECE_CHARS,
    chat_prompt_tokens,
    count_text,
    encoding_name,
    output_tokens,
)

CATALOG = load_catalog()


def model(model_id: str) -> ChatModel:
    found = CATALOG.chat(model_id)
    assert found is not None, model_id
    return found


def test_published_token_ids() -> None:
    cl100k, o200k = bpe_openai.get_encoding(CL100K), bpe_openai.get_encoding(O200K)
    # tiktoken's tests and the cookbook.
    assert cl100k.encode("hello world") == [15339, 1917]
    assert o200k.encode("hello world") == [24912, 2375]
    assert cl100k.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert o200k.encode("Hello, world! How are you today?") == [
        13225, 11, 2375, 0, 3253, 553, 481, 4044, 30
    ]  # fmt: skip
    assert count_text(CL100K, "hello world") == 2
    assert count_text(CL100K, "tiktoken is great!") == 6
    assert count_text(CL100K, "antidisestablishmentarianism") == 6
    assert count_text(O200K, "Hello, world! How are you today?") == 9


# The cookbook's example conversation (system messages with `name`s).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


def test_chat_prompts_count_as_the_cookbook_and_the_api_do() -> None:
    body = {"messages": COOKBOOK_MESSAGES}
    # Published: 129 prompt tokens for gpt-3.5-turbo and gpt-4 (cl100k_base), 124 for
    # gpt-4o and gpt-4o-mini (o200k_base).
    assert chat_prompt_tokens(body, model("gpt-3.5-turbo")) == 129
    assert chat_prompt_tokens(body, model("gpt-4-turbo")) == 129
    assert chat_prompt_tokens(body, model("gpt-4o")) == 124
    assert chat_prompt_tokens(body, model("gpt-4o-mini")) == 124


def test_the_encoding_is_chosen_by_model() -> None:
    for model_id in ("gpt-4o", "gpt-4.1-nano", "gpt-5", "gpt-5-codex", "o1", "o3-mini", "o4-mini"):
        assert encoding_name(model(model_id)) == O200K, model_id
    for model_id in ("gpt-4-turbo", "gpt-3.5-turbo"):
        assert encoding_name(model(model_id)) == CL100K, model_id
    for model_id in ("claude-sonnet-4-5", "gemini-2.5-pro", "deepseek-chat", "llama-4-scout"):
        assert encoding_name(model(model_id)) is None, model_id
        assert chat_prompt_tokens({"messages": COOKBOOK_MESSAGES}, model(model_id)) is None
        assert output_tokens(model(model_id), ["hello"]) is None


def test_text_parts_count_and_images_keep_the_models_fixed_figure() -> None:
    gpt_4o = model("gpt-4o")
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello world"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": " hello"},
                ],
            }
        ]
    }
    # 3 + "user" + "hello world" (2) + " hello" (1) + 3, and one image.
    assert chat_prompt_tokens(body, gpt_4o) == 3 + 1 + 2 + 1 + 3 + gpt_4o.image_input_tokens


def test_long_texts_count_as_a_whole() -> None:
    # Past the backend's limits per call (1,000,000 characters, 200,000 tokens): counted in
    # pieces cut where the pre-tokenizer cuts anyway.
    words = " hello" * 70_000
    assert len(words) > 2 * PIECE_CHARS
    assert count_text(O200K, words) == 70_000
    # Every emoji is 2 tokens in cl100k_base: 300,000 tokens in 150,000 characters.
    assert count_text(CL100K, "😀" * 150_000) == 300_000
    # A piece without spaces is counted whole: "안녕하세요" is 2 tokens in o200k_base.
    assert count_text(O200K, "안녕하세요" * 30_000) == 60_000
    # Special tokens' text in a prompt is plain text, not a refusal.
    assert count_text(CL100K, "<|endoftext|>") > 1
