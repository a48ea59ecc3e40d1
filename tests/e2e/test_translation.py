# mypy: disable-error-code="arg-type,call-overload,union-attr"
"""What each provider received, read back from the simulators' request logs."""

from __future__ import annotations

import base64
from typing import Any

import openai

from .conftest import FAMILY_MODELS, Sandbox
from .test_openai_sdk import PERSON_SCHEMA, PIXEL_PNG, WEATHER_TOOL

DATA_URL = "data:image/png;base64," + base64.b64encode(PIXEL_PNG).decode()
CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are a weather bot."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather where this photo was taken?"},
            {"type": "image_url", "image_url": {"url": DATA_URL}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
]


def _call(client: openai.OpenAI, model: str, **extra: Any) -> None:
    client.chat.completions.create(
        model=model, messages=CONVERSATION, tools=[WEATHER_TOOL], **extra
    )


def test_anthropic_request(client: openai.OpenAI, sandbox: Sandbox) -> None:
    _call(client, FAMILY_MODELS["anthropic"], tool_choice="required", temperature=1.7, stop="END")
    seen = sandbox.last_request("anthropic")
    body = seen["body"]
    assert seen["path"] == "/anthropic/v1/messages"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["headers"]["x-api-key"] != "sandbox-key"  # redacted in the log
    assert body["system"] in (
        "You are a weather bot.",
        [{"type": "text", "text": "You are a weather bot."}],
    )
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])
    image = next(b for b in body["messages"][0]["content"] if b["type"] == "image")
    assert image["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PIXEL_PNG).decode(),
    }
    tool_use = body["messages"][1]["content"][-1]
    assert tool_use == {
        "type": "tool_use",
        "id": "call_abc",
        "name": "get_weather",
        "input": {"city": "Paris", "unit": "c"},
    }
    tool_result = body["messages"][2]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "call_abc"
    assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]
    assert body["tool_choice"] == {"type": "any"}
    assert body["temperature"] == 1  # Anthropic accepts 0..1 only
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] > 0


def test_gemini_request(client: openai.OpenAI, sandbox: Sandbox) -> None:
    _call(
        client,
        FAMILY_MODELS["google"],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    seen = sandbox.last_request("google")
    body = seen["body"]
    assert seen["path"].endswith(":generateContent")
    assert body["systemInstruction"]["parts"][0]["text"] == "You are a weather bot."
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    inline = next(p for p in body["contents"][0]["parts"] if "inlineData" in p)["inlineData"]
    assert inline == {"mimeType": "image/png", "data": base64.b64encode(PIXEL_PNG).decode()}
    assert body["contents"][1]["parts"][0]["functionCall"]["args"] == {"city": "Paris", "unit": "c"}
    response_part = body["contents"][2]["parts"][0]["functionResponse"]
    assert response_part["name"] == "get_weather"
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert body["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_weather"],
    }


def test_gemini_fetches_http_images(client: openai.OpenAI, sandbox: Sandbox) -> None:
    url = f"{sandbox.http.base_url}/_sandbox/image.png".replace("//_", "/_")
    completion = client.chat.completions.create(
        model=FAMILY_MODELS["google"],
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
    )
    inline = sandbox.last_request("google")["body"]["contents"][0]["parts"][0]["inlineData"]
    assert inline["mimeType"] == "image/png"
    assert len(base64.b64decode(inline["data"])) > 0
    assert "bytes" in (completion.choices[0].message.content or "")


def test_json_mode_reaches_each_provider_its_own_way(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    schema_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
    }
    for model in FAMILY_MODELS.values():
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "a person"}],
            response_format=schema_format,
        )
    assert sandbox.last_request("openai")["body"]["response_format"] == schema_format
    assert sandbox.last_request("openrouter")["body"]["response_format"] == schema_format
    anthropic_format = sandbox.last_request("anthropic")["body"]["output_config"]["format"]
    assert anthropic_format == {"type": "json_schema", "schema": PERSON_SCHEMA}
    generation = sandbox.last_request("google")["body"]["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseJsonSchema"] == PERSON_SCHEMA

    client.chat.completions.create(
        model=FAMILY_MODELS["google"],
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    generation = sandbox.last_request("google")["body"]["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in generation


def test_openai_family_passes_through_with_upstream_model_id(
    client: openai.OpenAI, sandbox: Sandbox
) -> None:
    completion = client.chat.completions.create(
        model=FAMILY_MODELS["openrouter"], messages=[{"role": "user", "content": "hi"}], stream=True
    )
    list(completion)
    seen = sandbox.last_request("openrouter")
    assert seen["path"] == "/openrouter/api/v1/chat/completions"
    assert "/" in seen["body"]["model"]  # OpenRouter's vendor/model id, not ours
    # aig always asks for usage upstream, so it can meter streamed calls.
    assert seen["body"]["stream_options"] == {"include_usage": True}
