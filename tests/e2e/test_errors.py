# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""Errors reach clients in OpenAI's shape, with the status the SDKs map to the right class."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from devstack.stack import Stack

from .conftest import AUTH_FAILURE_BURST, FAMILY_MODELS, Sandbox, create_key

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


def test_failed_auth_is_throttled_per_client(base_url: str, api_key: str) -> None:
    """A burst of wrong keys from one client is answered 429 with retry-after before any key
    is checked; another client (and the right key from it) is not slowed."""
    attacker = {"x-forwarded-for": "203.0.113.7"}  # uvicorn trusts the local proxy header
    statuses = []
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for attempt in range(AUTH_FAILURE_BURST + 5):
            key = f"sk-aig-guess{attempt:04d}{'x' * 30}"
            response = http.get("/models", headers={**attacker, "authorization": f"Bearer {key}"})
            statuses.append(response.status_code)
        assert statuses[:AUTH_FAILURE_BURST] == [401] * AUTH_FAILURE_BURST
        assert statuses[-1] == 429
        throttled = http.get("/models", headers={**attacker, "authorization": f"Bearer {api_key}"})
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        error = throttled.json()["error"]
        assert error["code"] == "too_many_failed_auth" and error["type"] == "rate_limit_error"
        bystander = {"x-forwarded-for": "203.0.113.8", "authorization": f"Bearer {api_key}"}
        assert http.get("/models", headers=bystander).status_code == 200


def test_failed_admin_tokens_are_throttled(stack: Stack) -> None:
    attacker = {"x-forwarded-for": "203.0.113.9", "authorization": "Bearer wrong"}
    with httpx.Client(base_url=f"{stack.edge_url}/admin/v1", timeout=10) as http:
        statuses = [
            http.get("/accounts/acc_x", headers=attacker).status_code
            for _ in range(AUTH_FAILURE_BURST + 2)
        ]
        assert statuses[:AUTH_FAILURE_BURST] == [401] * AUTH_FAILURE_BURST
        assert statuses[-1] == 429
        # The real token from that address waits too: guessing must not be rewarded.
        real = {"x-forwarded-for": "203.0.113.9", "authorization": f"Bearer {stack.admin_token}"}
        assert http.get("/accounts/acc_x", headers=real).status_code == 429


def test_oversized_headers_get_431_before_auth(base_url: str) -> None:
    response = httpx.get(
        f"{base_url}/models", headers={"authorization": "Bearer " + "k" * 100_000}, timeout=10
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"


def test_a_body_that_never_finishes_arriving_gets_408(stack: Stack, api_key: str) -> None:
    """Declares 1,000 bytes, sends 10, then waits: the edge answers 408 after its body
    timeout (2 s in the test stack) instead of holding the connection forever."""
    with socket.create_connection(("127.0.0.1", stack.ports.edge), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            + f"authorization: Bearer {api_key}\r\n".encode()
            + b'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model":'
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def _raw_exchange(stack: Stack, request: bytes) -> bytes:
    """Sends bytes no HTTP client library would send; returns all the edge answers before it
    closes the connection."""
    with socket.create_connection(("127.0.0.1", stack.ports.edge), timeout=30) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-bad: a\x00b\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n",
        b"GET /v1/models HTTP/1.1\rhost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /v1/mo dels HTTP/1.1\r\nhost: x\r\n\r\n",
    ],
    ids=["nul-in-header", "control-char-in-header", "bare-cr", "cl-and-te", "space-in-target"],
)
def test_malformed_http_gets_an_openai_shaped_400(stack: Stack, request_bytes: bytes) -> None:
    reply = _raw_exchange(stack, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "malformed_http"
