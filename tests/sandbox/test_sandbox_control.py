"""The control API: request log, faults, run-time config, sample image, health."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib

import httpx
import openai
import pytest

from devstack.processes import free_port

CHAT_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "log me"}]}


def test_request_log_redacts_every_credential(sandbox_url: str, control: httpx.Client) -> None:
    httpx.post(
        sandbox_url + "/openai/v1/chat/completions",
        json=CHAT_BODY,
        headers={"authorization": "Bearer sk-very-secret"},
    )
    httpx.post(
        sandbox_url + "/anthropic/v1/messages",
        json={"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "sk-ant-very-secret", "anthropic-version": "2023-06-01"},
    )
    httpx.post(
        sandbox_url + "/google/v1beta/models/gemini-2.5-flash:generateContent?key=goog-very-secret",
        json={"contents": [{"parts": [{"text": "x"}]}]},
        headers={"x-goog-api-key": "goog-header-secret"},
    )

    log = control.get("/_sandbox/requests").json()["data"]
    assert [entry["provider"] for entry in log] == ["openai", "anthropic", "google"]
    assert "very-secret" not in control.get("/_sandbox/requests").text
    assert "header-secret" not in control.get("/_sandbox/requests").text
    assert log[0]["headers"]["authorization"] == "[redacted]"
    assert log[1]["headers"]["x-api-key"] == "[redacted]"
    assert log[2]["headers"]["x-goog-api-key"] == "[redacted]"
    assert log[2]["query"] == "key=[redacted]"
    assert log[0]["path"] == "/openai/v1/chat/completions"
    assert log[0]["body"] == CHAT_BODY
    assert log[0]["at"] <= log[1]["at"] <= log[2]["at"]

    only_google = control.get("/_sandbox/requests", params={"provider": "google"}).json()["data"]
    assert [entry["provider"] for entry in only_google] == ["google"]
    control.delete("/_sandbox/requests")
    assert control.get("/_sandbox/requests").json()["data"] == []


def test_request_log_is_bounded(sandbox_url: str, control: httpx.Client) -> None:
    control.post("/_sandbox/config", json={"request_log_size": 3})
    try:
        with httpx.Client(base_url=sandbox_url, headers={"authorization": "Bearer k"}) as client:
            for number in range(5):
                body = {**CHAT_BODY, "messages": [{"role": "user", "content": str(number)}]}
                client.post("/openai/v1/chat/completions", json=body)
        log = control.get("/_sandbox/requests").json()["data"]
        assert [entry["body"]["messages"][0]["content"] for entry in log] == ["2", "3", "4"]
    finally:
        control.post("/_sandbox/config", json={"request_log_size": 500})


def test_faults_count_down_and_are_listed(sandbox_url: str, control: httpx.Client) -> None:
    added = control.post("/_sandbox/faults", json={"provider": "openai", "status": 502, "count": 2})
    assert added.json()["data"] == [
        {
            "provider": "openai",
            "status": 502,
            "count": 2,
            "after_chunks": None,
            "message": None,
            "retry_after": 1,
            "delay_ms": 0,
            "render": False,
        }
    ]
    headers = {"authorization": "Bearer k"}
    url = sandbox_url + "/openai/v1/chat/completions"
    # Another provider's calls do not consume an OpenAI fault.
    openrouter = httpx.post(
        sandbox_url + "/openrouter/api/v1/chat/completions", json=CHAT_BODY, headers=headers
    )
    assert openrouter.status_code == 200
    assert httpx.post(url, json=CHAT_BODY, headers=headers).status_code == 502
    assert control.get("/_sandbox/faults").json()["data"][0]["count"] == 1
    failed = httpx.post(url, json=CHAT_BODY, headers=headers)
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "server_error"
    assert control.get("/_sandbox/faults").json()["data"] == []
    assert httpx.post(url, json=CHAT_BODY, headers=headers).status_code == 200


def test_wildcard_fault_hits_every_provider(sandbox_url: str, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "*", "status": 500, "count": 2})
    openai_call = httpx.post(
        sandbox_url + "/openai/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "x"},
        headers={"authorization": "Bearer k"},
    )
    gemini_call = httpx.post(
        sandbox_url + "/google/v1beta/models/gemini-2.5-flash:generateContent",
        json={"contents": [{"parts": [{"text": "x"}]}]},
        headers={"x-goog-api-key": "k"},
    )
    assert openai_call.status_code == 500
    assert gemini_call.status_code == 500
    assert gemini_call.json() == {
        "error": {
            "code": 500,
            "message": gemini_call.json()["error"]["message"],
            "status": "INTERNAL",
        }
    }


def test_mid_stream_fault_waits_for_a_streaming_call(
    sandbox_url: str, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": "openai", "after_chunks": 1})
    headers = {"authorization": "Bearer k"}
    url = sandbox_url + "/openai/v1/chat/completions"
    assert httpx.post(url, json=CHAT_BODY, headers=headers).status_code == 200
    assert control.get("/_sandbox/faults").json()["data"][0]["count"] == 1
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", url, json={**CHAT_BODY, "stream": True}, headers=headers) as response,
    ):
        assert response.status_code == 200
        response.read()
    assert control.get("/_sandbox/faults").json()["data"] == []


def test_delete_faults_clears_them(control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "google", "status": 503, "count": 5})
    assert control.delete("/_sandbox/faults").json()["data"] == []
    assert control.get("/_sandbox/faults").json()["data"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "bedrock", "status": 500},
        {"provider": "openai", "status": 200},
        {"provider": "openai", "count": 0},
        {"provider": "openai", "after_chunks": -1},
        {"provider": "openai", "status": "500"},
    ],
)
def test_invalid_faults_are_rejected(control: httpx.Client, body: dict[str, object]) -> None:
    assert control.post("/_sandbox/faults", json=body).status_code == 400
    assert control.get("/_sandbox/faults").json()["data"] == []


def test_config_changes_apply_at_run_time(sandbox_url: str, control: httpx.Client) -> None:
    changed = control.post("/_sandbox/config", json={"stream_chunks": 3, "answer_tokens": 100})
    try:
        assert changed.json()["stream_chunks"] == 3
        sdk = openai.OpenAI(api_key="k", base_url=sandbox_url + "/openai/v1", max_retries=0)
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert len(contents) == 3
        assert len("".join(contents)) >= 350  # ~100 tokens of ~4 characters
    finally:
        control.post("/_sandbox/config", json={"stream_chunks": 8, "answer_tokens": 40})
    assert control.post("/_sandbox/config", json={"latency": 5}).status_code == 400
    assert control.post("/_sandbox/config", json={"port": 1}).status_code == 400
    assert control.get("/_sandbox/config").json()["stream_chunks"] == 8


def test_sample_image_is_a_valid_png(control: httpx.Client) -> None:
    response = control.get("/_sandbox/image.png")
    assert response.headers["content-type"] == "image/png"
    png = response.content
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    idat_start = png.index(b"IDAT") + 4
    idat_length = int.from_bytes(png[idat_start - 8 : idat_start - 4], "big")
    pixels = zlib.decompress(png[idat_start : idat_start + idat_length])
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert len(pixels) == height * (1 + 3 * width)
    assert control.get("/_sandbox/image.png").content == png


def test_healthz(control: httpx.Client) -> None:
    assert control.get("/healthz").json() == {"status": "ok"}


def test_python_dash_m_sandbox_serves_on_env_port() -> None:
    port = free_port()
    env = {**os.environ, "AIG_SANDBOX_PORT": str(port), "AIG_SANDBOX_STREAM_CHUNKS": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/_sandbox/config").json()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        assert config["port"] == port
        assert config["stream_chunks"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
