"""The Azure OpenAI simulator, driven by the official SDK's own Azure client."""

from __future__ import annotations

import httpx
import openai
import pytest

API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def azure(sandbox_url: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{sandbox_url}/azure",
        api_key="azure-test-key",
        api_version=API_VERSION,
        max_retries=0,
    )


def test_chat_goes_to_the_deployment_url_with_an_api_key_header(
    azure: openai.AzureOpenAI, control: httpx.Client
) -> None:
    control.delete("/_sandbox/requests")
    reply = azure.chat.completions.create(
        model="prod-gpt4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    assert reply.model == "prod-gpt4o-mini"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    seen = control.get("/_sandbox/requests", params={"provider": "azure"}).json()["data"][-1]
    assert seen["path"] == "/azure/openai/deployments/prod-gpt4o-mini/chat/completions"
    assert f"api-version={API_VERSION}" in seen["query"]
    assert seen["headers"]["api-key"] == "[redacted]"
    assert "authorization" not in seen["headers"]


def test_stream_and_embeddings(azure: openai.AzureOpenAI) -> None:
    chunks = list(
        azure.chat.completions.create(
            model="prod-gpt4o-mini",
            messages=[{"role": "user", "content": "Stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None
    vectors = azure.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536


def test_missing_key_and_missing_api_version_are_refused(sandbox_url: str) -> None:
    url = f"{sandbox_url}/azure/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    no_key = httpx.post(url, params={"api-version": API_VERSION}, json=body)
    assert no_key.status_code == 401
    # A Bearer token is not how Azure takes its key.
    bearer = httpx.post(
        url, params={"api-version": API_VERSION}, json=body, headers={"authorization": "Bearer k"}
    )
    assert bearer.status_code == 401
    no_version = httpx.post(url, json=body, headers={"api-key": "k"})
    assert no_version.status_code == 404
