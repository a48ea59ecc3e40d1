# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""Errors reach clients in OpenAI's shape, with the status the SDKs map to the right class."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import FAMILY_MODELS, Sandbox, create_key

HELLO = [{"role": "user", "content": "hello"}]
# These tests are about how one provider's errors reach the client, so failover is off.
NO_FALLBACKS = {"aig": {"fallbacks": False}}


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    assert response.headers["x-request-id"].startswith("req_")
    return dict(body["error"])


def test_bad_key_is_authentication_error(base_url: str) -> None:
    client = openai.OpenAI(
        base_url=base_url, api_key="sk-aig-not-a-real-key-00000000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert caught.value.code == "invalid_api_key"
    assert "sk-aig-not-a-real-key" not in caught.value.message


def test_missing_key(edge: httpx.Client) -> None:
    response = edge.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO},
        headers={"authorization": ""},
    )
    assert response.status_code == 401
    assert _error(response)["code"] == "missing_api_key"


def test_revoked_key_gets_401_on_the_next_call(admin: httpx.Client, base_url: str) -> None:
    created = create_key(admin, "to-revoke")
    client = openai.OpenAI(base_url=base_url, api_key=created["key"], max_retries=0)
    assert client.models.list().data
    assert admin.delete(f"/keys/{created['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_unknown_model_is_not_found(client: openai.OpenAI, sandbox: Sandbox) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nonexistent", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="x")


def test_malformed_body_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages="hello")
    assert caught.value.param == "messages"
    assert caught.value.code == "invalid_type"


@pytest.mark.parametrize("model", list(FAMILY_MODELS.values()))
def test_upstream_5xx_is_internal_server_error(
    client: openai.OpenAI, sandbox: Sandbox, model: str
) -> None:
    provider = next(p for p, m in FAMILY_MODELS.items() if m == model)
    sandbox.fault(provider, 500, count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=HELLO, extra_body=NO_FALLBACKS)
    assert caught.value.status_code == 500
    body = caught.value.body
    assert isinstance(body, dict) and body["message"] and body["type"] == "server_error"
    # The fault is used up: the next call goes through.
    assert client.chat.completions.create(model=model, messages=HELLO).choices


def test_anthropic_overloaded_becomes_503(client: openai.OpenAI, sandbox: Sandbox) -> None:
    sandbox.fault("anthropic", 529)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model=FAMILY_MODELS["anthropic"], messages=HELLO, extra_body=NO_FALLBACKS
        )
    assert caught.value.status_code == 503


def test_rate_limit_keeps_retry_after(edge: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.fault("openai", 429)
    response = edge.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO, **NO_FALLBACKS}
    )
    assert response.status_code == 429
    assert response.headers.get("retry-after")
    assert _error(response)["type"] == "rate_limit_error"


def test_streamed_call_fault_before_first_chunk_is_http_error(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    sandbox.fault("google", 503)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model=FAMILY_MODELS["google"],
            messages=HELLO,
            stream=True,
            extra_body=NO_FALLBACKS,
        )


@pytest.mark.parametrize("model", list(FAMILY_MODELS.values()))
def test_mid_stream_break_ends_with_error_chunk(
    client: openai.OpenAI, edge: httpx.Client, sandbox: Sandbox, model: str
) -> None:
    provider = next(p for p, m in FAMILY_MODELS.items() if m == model)
    sandbox.fault(provider, 500, after_chunks=2)
    with edge.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "a long answer please"}],
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2]
    sandbox.fault(provider, 500, after_chunks=2)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "again"}],
            stream=True,
        ):
            pass


def test_capability_error_before_upstream(client: openai.OpenAI, sandbox: Sandbox) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="deepseek-chat",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ],
        )
    assert "image" in caught.value.message
    assert sandbox.requests("openrouter") == []
