"""The two-core phase's compiled upstream (bench/upstream, Go) speaks OpenAI's chat
completions wire format: driven here by the official OpenAI SDK, plain and streamed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from bench import compiled_upstream
from devstack.processes import free_port

SETTINGS = {
    "AIG_SANDBOX_LATENCY_MS": "30",
    "AIG_SANDBOX_CHUNK_INTERVAL_MS": "1",
    "AIG_SANDBOX_STREAM_CHUNKS": "6",
    "AIG_SANDBOX_ANSWER_TOKENS": "40",
}
PROMPT = "Write a short greeting for the benchmark."


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = compiled_upstream.build(tmp_path_factory.mktemp("upstream") / "upstream")
    running = compiled_upstream.start(free_port(), SETTINGS, binary=binary)
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture
def client(upstream: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{upstream}/openai/v1", api_key="sk-bench") as sdk:
        yield sdk


def test_the_sandbox_settings_become_its_flags() -> None:
    assert compiled_upstream.arguments(SETTINGS) == [
        "-latency-ms",
        "30",
        "-chunk-interval-ms",
        "1",
        "-stream-chunks",
        "6",
        "-answer-tokens",
        "40",
    ]
    assert compiled_upstream.arguments({}) == []


def test_a_completion_through_the_openai_sdk(client: openai.OpenAI) -> None:
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    waited = time.monotonic() - started
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    # About four bytes a token, as the sandbox's answers are: the same work for a gateway.
    content = choice.message.content or ""
    assert 4 * 40 <= len(content) <= 4 * 40 + 20
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 40
    assert completion.usage.prompt_tokens == (len(PROMPT) + 3) // 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 40
    # Its latency before the answer (a lower bound: the call cannot be faster than it).
    assert waited >= 0.03


def test_a_streamed_completion_through_the_openai_sdk(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == 6  # AIG_SANDBOX_STREAM_CHUNKS
    assert "".join(texts) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert not chunks[-1].choices
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 40
    assert len({c.id for c in chunks}) == 1


def test_without_usage_asked_a_stream_has_none(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_bad_calls_get_openais_errors(upstream: str, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as no_model:
        client.chat.completions.create(model="", messages=[{"role": "user", "content": PROMPT}])
    assert "model" in no_model.value.message
    url = f"{upstream}/openai/v1/chat/completions"
    unauthenticated = httpx.post(url, json={"model": "gpt-4o-mini", "messages": []})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "invalid_api_key"
    not_json = httpx.post(url, content=b"{", headers={"authorization": "Bearer sk-bench"})
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]["message"]
