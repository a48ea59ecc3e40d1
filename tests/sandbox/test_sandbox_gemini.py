"""The Gemini simulator, driven through the official `google-genai` SDK."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import jsonschema
import pytest
from google import genai
from google.genai import errors, types

MODEL = "gemini-2.5-flash"

LOOKUP = types.FunctionDeclaration(
    name="lookup_order",
    description="Find an order",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={
            "order_id": types.Schema(type=types.Type.STRING),
            "include_items": types.Schema(type=types.Type.BOOLEAN),
            "channel": types.Schema(type=types.Type.STRING, enum=["web", "store"]),
        },
        required=["order_id", "include_items", "channel"],
    ),
)
CANCEL = types.FunctionDeclaration(
    name="cancel_order",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"reason": types.Schema(type=types.Type.STRING)},
        required=["reason"],
    ),
)


@pytest.fixture(params=["v1beta", "v1"])
def client(sandbox_url: str, request: pytest.FixtureRequest) -> genai.Client:
    return genai.Client(
        api_key="goog-secret",
        http_options=types.HttpOptions(base_url=sandbox_url + "/google", api_version=request.param),
    )


def test_generate_content_plain(client: genai.Client) -> None:
    response = client.models.generate_content(model=MODEL, contents="Hello Gemini")
    assert response.text is not None and "Hello Gemini" in response.text
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    again = client.models.generate_content(model=MODEL, contents="Hello Gemini")
    assert again.text == response.text


def test_generate_content_stream(client: genai.Client) -> None:
    plain = client.models.generate_content(model=MODEL, contents="stream me")
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream me"))
    assert len(chunks) >= 4
    assert "".join(chunk.text or "" for chunk in chunks) == plain.text
    last = chunks[-1]
    assert (last.candidates or [])[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert plain.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == plain.usage_metadata.candidates_token_count
    assert all((chunk.candidates or [])[0].finish_reason is None for chunk in chunks[:-1])


def test_stream_wire_has_no_done_marker(sandbox_url: str) -> None:
    response = httpx.post(
        sandbox_url + f"/google/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&key=k",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\r\n\r\n") if line]
    assert all(event.startswith("data: {") for event in events)
    assert "[DONE]" not in response.text
    assert "finishReason" in events[-1] and "finishReason" not in events[0]


def test_function_calling(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[LOOKUP, CANCEL])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["cancel_order"]
            )
        ),
    )
    response = client.models.generate_content(model=MODEL, contents="cancel it", config=config)
    calls = response.function_calls or []
    assert [call.name for call in calls] == ["cancel_order"]
    assert isinstance((calls[0].args or {}).get("reason"), str)


def test_function_call_streamed_whole_then_answer_uses_result(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[LOOKUP])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    chunks = list(
        client.models.generate_content_stream(
            model=MODEL, contents="where is order 7?", config=config
        )
    )
    calls = [call for chunk in chunks for call in chunk.function_calls or []]
    assert len(calls) == 1 and calls[0].name == "lookup_order"
    jsonschema.validate(
        calls[0].args,
        {
            "type": "object",
            "properties": {
                "channel": {"enum": ["web", "store"]},
                "include_items": {"type": "boolean"},
            },
            "required": ["order_id", "include_items", "channel"],
        },
    )

    history: list[Any] = [
        types.Content(role="user", parts=[types.Part(text="where is order 7?")]),
        types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(
                    name="lookup_order", response={"status": "shipped"}
                )
            ],
        ),
    ]
    answer = client.models.generate_content(model=MODEL, contents=history, config=config)
    assert answer.function_calls is None
    assert "shipped" in (answer.text or "")


def test_gemini_3_requires_thought_signature_on_replay(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[CANCEL])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    first = client.models.generate_content(
        model="gemini-3-pro-preview", contents="cancel", config=config
    )
    model_turn = (first.candidates or [])[0].content
    assert model_turn is not None and (model_turn.parts or [])[0].thought_signature
    result = types.Content(
        role="user",
        parts=[types.Part.from_function_response(name="cancel_order", response={"ok": True})],
    )
    user_turn = types.Content(role="user", parts=[types.Part(text="cancel")])
    answer = client.models.generate_content(
        model="gemini-3-pro-preview", contents=[user_turn, model_turn, result], config=config
    )
    assert '{"ok":true}' in (answer.text or "")

    stripped = types.Content(
        role="model", parts=[types.Part(function_call=(model_turn.parts or [])[0].function_call)]
    )
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model="gemini-3-pro-preview", contents=[user_turn, stripped, result], config=config
        )
    assert caught.value.code == 400
    assert "thought_signature" in str(caught.value)


def test_json_with_response_schema(client: genai.Client) -> None:
    schema = types.Schema(
        type=types.Type.OBJECT,
        properties={
            "city": types.Schema(type=types.Type.STRING),
            "population": types.Schema(type=types.Type.INTEGER, minimum=1),
            "districts": types.Schema(
                type=types.Type.ARRAY, items=types.Schema(type=types.Type.STRING), min_items=2
            ),
        },
        required=["city", "population", "districts"],
    )
    response = client.models.generate_content(
        model=MODEL,
        contents="describe Paris",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=schema
        ),
    )
    value = json.loads(response.text or "")
    jsonschema.validate(
        value,
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "population": {"type": "integer", "minimum": 1},
                "districts": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            },
            "required": ["city", "population", "districts"],
        },
    )


def test_json_with_response_json_schema(client: genai.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"]}},
        "required": ["ok", "note"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents="status?",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=schema
        ),
    )
    jsonschema.validate(json.loads(response.text or ""), schema)


def test_inline_image_is_acknowledged(client: genai.Client, sandbox_url: str) -> None:
    png = httpx.get(sandbox_url + "/_sandbox/image.png").content
    response = client.models.generate_content(
        model=MODEL,
        contents=[types.Part.from_bytes(data=png, mime_type="image/png"), "what is it?"],
    )
    expected = f"image 1: {len(png)} bytes sha256={hashlib.sha256(png).hexdigest()[:12]}"
    assert expected in (response.text or "")


def test_embed_content(client: genai.Client) -> None:
    single = client.models.embed_content(model="gemini-embedding-001", contents="hello")
    assert len((single.embeddings or [])[0].values or []) == 3072
    batch = client.models.embed_content(
        model="text-embedding-004",
        contents=["hello", "world"],
        config=types.EmbedContentConfig(output_dimensionality=64),
    )
    vectors = [embedding.values for embedding in batch.embeddings or []]
    assert [len(vector or []) for vector in vectors] == [64, 64]
    assert vectors[0] != vectors[1]


def test_embed_content_rest_endpoint(sandbox_url: str) -> None:
    response = httpx.post(
        sandbox_url + "/google/v1beta/models/text-embedding-004:embedContent",
        headers={"x-goog-api-key": "k"},
        json={"content": {"parts": [{"text": "hello"}]}},
    )
    assert response.status_code == 200
    assert len(response.json()["embedding"]["values"]) == 768


def test_missing_key_is_rejected(sandbox_url: str) -> None:
    response = httpx.post(
        sandbox_url + f"/google/v1beta/models/{MODEL}:generateContent",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_unavailable_fault_raises_server_error(client: genai.Client, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "google", "status": 503})
    with pytest.raises(errors.ServerError) as caught:
        client.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == 503
    assert caught.value.status == "UNAVAILABLE"
    assert client.models.generate_content(model=MODEL, contents="hi").text


def test_quota_fault_raises_client_error(client: genai.Client, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "google", "status": 429})
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.status == "RESOURCE_EXHAUSTED"


def test_mid_stream_fault_breaks_the_stream(client: genai.Client, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "google", "after_chunks": 2})
    received = []
    # google-genai reads through `httpx2`, so match the error by name, not class.
    with pytest.raises(Exception) as caught:
        for chunk in client.models.generate_content_stream(model=MODEL, contents="break"):
            received.append(chunk)
    assert type(caught.value).__name__ == "RemoteProtocolError"
    assert len(received) == 2


def test_thinking_budget_bills_thoughts_and_shows_them_only_when_asked(
    client: genai.Client,
) -> None:
    def ask(**thinking: Any) -> types.GenerateContentResponse:
        return client.models.generate_content(
            model=MODEL,
            contents="Why is the sky blue?",
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(**thinking)),
        )

    shown = ask(thinking_budget=1024, include_thoughts=True)
    parts = shown.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts is not None and parts[0].thought is True and parts[0].text
    assert shown.text and parts[0].text not in shown.text  # the SDK leaves thoughts out
    assert ((shown.usage_metadata and shown.usage_metadata.thoughts_token_count) or 0) > 0

    hidden = ask(thinking_budget=1024)
    assert not any(part.thought for part in hidden.candidates[0].content.parts)  # type: ignore[index,union-attr]
    assert ((hidden.usage_metadata and hidden.usage_metadata.thoughts_token_count) or 0) > 0
    off = ask(thinking_budget=0)
    assert off.usage_metadata is not None and not off.usage_metadata.thoughts_token_count
    with pytest.raises(errors.ClientError, match="thinking_budget"):
        ask(thinking_budget=10**6)

    streamed = list(
        client.models.generate_content_stream(
            model=MODEL,
            contents="Why is the sky blue?",
            config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_budget=1024, include_thoughts=True)
            ),
        )
    )
    first = streamed[0].candidates[0].content.parts  # type: ignore[index,union-attr]
    assert first is not None and first[0].thought is True
