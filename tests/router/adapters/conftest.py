"""Checks shared by the adapter tests: everything we emit must parse with the OpenAI SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

CheckChunks = Callable[[list[dict[str, Any]]], ChatCompletion]


def _check_stream(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """Validate every chunk and the stream-level rules, then accumulate like the SDK does."""
    assert chunks, "the stream produced no chunks"
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1
    seen_tool_indexes: dict[int, set[int]] = {}
    state = ChatCompletionStreamState()
    for position, chunk in enumerate(chunks):
        assert chunk["object"] == "chat.completion.chunk"
        if not chunk["choices"]:
            assert position == len(chunks) - 1, "the usage chunk must come last"
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                indexes = seen_tool_indexes.setdefault(choice["index"], set())
                if call["index"] in indexes:
                    # id/type/name only in the first delta for an index (SDKs join strings)
                    assert "id" not in call and "type" not in call
                    assert "name" not in call["function"]
                else:
                    assert call["index"] == len(indexes), "tool indexes count from 0 without gaps"
                    assert call["id"] and call["type"] == "function" and call["function"]["name"]
                    indexes.add(call["index"])
                assert "function" in call
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    # Not get_final_completion(): it raises on finish_reason content_filter/length by design.
    return ChatCompletion.model_validate(state.current_completion_snapshot.model_dump())


@pytest.fixture
def check_stream() -> CheckChunks:
    return _check_stream
