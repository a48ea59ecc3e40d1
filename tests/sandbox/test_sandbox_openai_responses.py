"""The OpenAI Responses simulator (`/openai/v1/responses`), driven through the `openai` SDK.

The SDK builds its models without validating them, so the wire checks also compare raw
JSON against the fields the SDK's models declare required.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseUsage,
)
from test_sandbox_openai import TIME_TOOL as CHAT_TIME_TOOL
from test_sandbox_openai import WEATHER_TOOL as CHAT_WEATHER_TOOL

MODEL = "gpt-4.1-mini"
# The chat tests' tools in Responses' flatter shape: `name` and `parameters` sit on the tool.
WEATHER_TOOL: Any = {"type": "function", **CHAT_WEATHER_TOOL["function"]}
TIME_TOOL: Any = {"type": "function", **CHAT_TIME_TOOL["function"]}
TEXT_EVENTS_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_EVENTS_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def client(sandbox_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="sk-test-secret", base_url=sandbox_url + "/openai/v1", max_retries=0
    ) as sdk:
        yield sdk


def _missing_fields(model: type[pydantic.BaseModel], data: dict[str, Any]) -> set[str]:
    return {
        field.alias or name
        for name, field in model.model_fields.items()
        if field.is_required() and (field.alias or name) not in data
    }


def _stream_event_models() -> dict[str, type[pydantic.BaseModel]]:
    union = typing.get_args(ResponseStreamEvent)[0]
    return {
        typing.get_args(model.model_fields["type"].annotation)[0]: model
        for model in typing.get_args(union)
    }


def test_plain_response_is_chat_answer_in_responses_shape(
    client: openai.OpenAI, control: httpx.Client
) -> None:
    first = client.responses.create(model=MODEL, input="Tell me about gateways")
    second = client.responses.create(model=MODEL, input="Tell me about gateways")
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about gateways"}]
    )

    assert first.object == "response"
    assert first.status == "completed"
    assert first.id.startswith("resp_") and first.id != second.id
    assert first.model == MODEL
    assert first.output_text == second.output_text == chat.choices[0].message.content
    assert 'Sandbox answer to "Tell me about gateways"' in first.output_text
    message = first.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert first.usage is not None and chat.usage is not None
    assert first.usage.input_tokens == chat.usage.prompt_tokens
    assert first.usage.output_tokens == chat.usage.completion_tokens
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.usage.output_tokens_details.reasoning_tokens == 0
    assert (first._request_id or "").startswith("req_")

    logged = control.get("/_sandbox/requests", params={"provider": "openai"}).json()["data"]
    assert logged[0]["path"] == "/openai/v1/responses"
    assert logged[0]["body"]["input"] == "Tell me about gateways"
    assert logged[0]["headers"]["authorization"] == "[redacted]"


def test_raw_response_has_every_field_the_sdk_requires(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="fields", tools=[WEATHER_TOOL], tool_choice="none"
    )
    body = json.loads(raw.text)
    assert _missing_fields(Response, body) == set()
    assert _missing_fields(ResponseUsage, body["usage"]) == set()
    message = body["output"][0]
    assert _missing_fields(ResponseOutputMessage, message) == set()
    assert _missing_fields(ResponseOutputText, message["content"][0]) == set()
    assert body["error"] is None and body["incomplete_details"] is None
    assert body["tool_choice"] == "none"
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["strict"] is True
    assert body["text"]["format"] == {"type": "text"}
    assert body["parallel_tool_calls"] is True

    called = json.loads(
        client.responses.with_raw_response.create(
            model=MODEL, input="weather?", tools=[WEATHER_TOOL]
        ).text
    )
    assert _missing_fields(ResponseFunctionToolCall, called["output"][0]) == set()


def test_instructions_and_message_items_count_as_input(client: openai.OpenAI) -> None:
    bare = client.responses.create(model=MODEL, input="second question")
    # An earlier assistant turn comes back as an `output_text` part, as SDK users replay it.
    turns: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "first answer"}],
        },
        {"role": "user", "content": "second question"},
    ]
    full = client.responses.create(
        model=MODEL, instructions="You are terse and answer in one sentence.", input=turns
    )
    assert full.instructions == "You are terse and answer in one sentence."
    assert full.output_text == bare.output_text  # the last user turn decides the answer
    assert bare.usage is not None and full.usage is not None
    extra = "You are terse and answer in one sentence." + "first question" + "first answer"
    assert full.usage.input_tokens == pytest.approx(bare.usage.input_tokens + len(extra) / 4, abs=2)


def test_input_image_is_acknowledged(client: openai.OpenAI, sandbox_url: str) -> None:
    url = sandbox_url + "/_sandbox/image.png"
    response = client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "describe"},
                    {"type": "input_image", "image_url": url, "detail": "low"},
                ],
            }
        ],
    )
    assert f"image 1: {url}" in response.output_text
    assert response.usage is not None and response.usage.input_tokens > 85


def test_function_call_then_output_gets_text(client: openai.OpenAI) -> None:
    question: Any = {"role": "user", "content": "weather in Paris?"}
    called = client.responses.create(model=MODEL, input=[question], tools=[WEATHER_TOOL])
    assert called.status == "completed"
    assert called.output_text == ""
    [call] = called.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and (call.id or "").startswith("fc_")
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["parameters"])

    follow_up: list[Any] = [
        question,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"},
    ]
    answered = client.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        previous_response_id=called.id,
        input=follow_up,
    )
    assert answered.previous_response_id == called.id
    assert answered.output[0].type == "message"
    assert "Tool result received: sunny, 24 C." in answered.output_text


def test_tool_choice_and_parallel_calls(client: openai.OpenAI) -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    named = client.responses.create(
        model=MODEL,
        input="what time is it?",
        tools=tools,
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert [item.name for item in named.output if item.type == "function_call"] == ["get_time"]

    declined = client.responses.create(
        model=MODEL, input="what time is it?", tools=tools, tool_choice="none"
    )
    assert [item.type for item in declined.output] == ["message"]

    both = client.responses.create(model=MODEL, input="both, in parallel", tools=tools)
    assert [item.name for item in both.output if item.type == "function_call"] == [
        "get_weather",
        "get_time",
    ]
    one = client.responses.create(
        model=MODEL, input="both, in parallel", tools=tools, parallel_tool_calls=False
    )
    assert len(one.output) == 1


class Review(pydantic.BaseModel):
    title: str
    rating: float
    tags: list[str]
    status: typing.Literal["draft", "final"]


def test_json_schema_format_answers_matching_json(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "status": {"type": "string", "enum": ["draft", "final"]},
        },
        "required": ["title", "tags", "status"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=MODEL,
        input="review it",
        text={
            "format": {"type": "json_schema", "name": "review", "schema": schema, "strict": True}
        },
    )
    value = json.loads(response.output_text)
    jsonschema.validate(value, schema)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"

    parsed = client.responses.parse(model=MODEL, input="review it", text_format=Review)
    assert isinstance(parsed.output_parsed, Review)
    assert parsed.output_parsed.status == "draft"


def test_stream_events_join_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input="stream this")
    events = list(client.responses.create(model=MODEL, input="stream this", stream=True))

    kinds = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert kinds == [
        *TEXT_EVENTS_HEAD,
        *(["response.output_text.delta"] * len(deltas)),
        *TEXT_EVENTS_TAIL,
    ]
    assert len(deltas) >= 4
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(event.delta for event in deltas) == plain.output_text
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and completed.type == "response.completed"
    assert created.response.status == "in_progress" and created.response.output == []
    assert created.response.id == completed.response.id
    assert completed.response.output_text == plain.output_text
    assert completed.response.usage == plain.usage


def test_stream_wire_events_are_named_and_complete(sandbox_url: str) -> None:
    models = _stream_event_models()
    with httpx.stream(
        "POST",
        sandbox_url + "/openai/v1/responses",
        headers={"authorization": "Bearer sk"},
        json={"model": MODEL, "input": "weather?", "tools": [WEATHER_TOOL], "stream": True},
    ) as wire:
        assert wire.headers["content-type"].startswith("text/event-stream")
        blocks = wire.read().decode().strip().split("\n\n")
    for block in blocks:
        name_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert name_line == "event: " + data["type"]
        assert _missing_fields(models[data["type"]], data) == set(), data["type"]
    assert "[DONE]" not in blocks[-1]


def test_stream_helper_accumulates_a_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="weather?", tools=[WEATHER_TOOL]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[2] == "response.output_item.added"
    assert kinds.count("response.function_call_arguments.delta") >= 3
    assert kinds[-4:] == [
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    [call] = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["parameters"])


def test_text_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="helper") as stream:
        text = "".join(
            event.delta for event in stream if event.type == "response.output_text.delta"
        )
        final = stream.get_final_response()
    assert final.output_text == text
    assert 'Sandbox answer to "helper"' in text
    assert final.usage is not None and final.usage.total_tokens > 0


def test_max_output_tokens_and_reasoning_share_the_budget(client: openai.OpenAI) -> None:
    cut = client.responses.create(model=MODEL, input="long please", max_output_tokens=16)
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and cut.usage.output_tokens == 16

    reasoned = client.responses.create(model="o4-mini", input="think", reasoning={"effort": "low"})
    assert [item.type for item in reasoned.output] == ["reasoning", "message"]
    assert reasoned.reasoning is not None and reasoned.reasoning.effort == "low"
    assert reasoned.usage is not None
    details = reasoned.usage.output_tokens_details
    assert details.reasoning_tokens == 32
    assert reasoned.usage.output_tokens - 32 == pytest.approx(len(reasoned.output_text) / 4, abs=1)

    both = client.responses.create(
        model="o4-mini", input="think", reasoning={"effort": "high"}, max_output_tokens=20
    )
    assert both.status == "incomplete"
    assert both.usage is not None and both.usage.output_tokens == 20


def test_incomplete_stream_ends_with_response_incomplete(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model=MODEL, input="long", max_output_tokens=16, stream=True)
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_rate_limit_fault_then_recovery(client: openai.OpenAI, control: httpx.Client) -> None:
    control.post("/_sandbox/faults", json={"provider": "openai", "status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model=MODEL, input="hi")
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    assert client.responses.create(model=MODEL, input="hi").status == "completed"


def test_mid_stream_fault_drops_the_connection(
    client: openai.OpenAI, control: httpx.Client
) -> None:
    control.post("/_sandbox/faults", json={"provider": "openai", "after_chunks": 3})
    received = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for event in client.responses.create(model=MODEL, input="cut me", stream=True):
            received.append(event.type)
    assert received == TEXT_EVENTS_HEAD[:3]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": MODEL}, "input", "missing_required_parameter"),
        ({"model": MODEL, "input": []}, "input", "invalid_value"),
        ({"model": MODEL, "input": "hi", "max_output_tokens": 8}, "max_output_tokens", None),
        (
            {"model": MODEL, "input": "hi", "text": {"format": {"type": "json_schema"}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        (
            {"model": MODEL, "input": [{"role": "robot", "content": "hi"}]},
            "input[0].role",
            "invalid_value",
        ),
    ],
)
def test_bad_request_names_the_param(
    client: openai.OpenAI, body: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body=body, cast_to=Response)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_missing_key_is_401(sandbox_url: str) -> None:
    response = httpx.post(
        sandbox_url + "/openai/v1/responses", json={"model": MODEL, "input": "hi"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
