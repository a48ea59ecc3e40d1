"""Capability checks before any upstream call, and the prompt-token over-estimate."""

from __future__ import annotations

from typing import Any

import pytest

from aig_common.errors import APIError
from catalog.estimate import estimate_prompt_tokens, requested_max_output_tokens
from catalog.models import Catalog, ChatModel, load_catalog
from router.capabilities import check_chat_request

IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 30_000}}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def model(catalog: Catalog, model_id: str) -> ChatModel:
    found = catalog.chat(model_id)
    assert found is not None, model_id
    return found


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **extra}


def with_image() -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE_PART]},
        ],
    }


def rejected(body: dict[str, Any], target: ChatModel) -> APIError:
    with pytest.raises(APIError) as caught:
        check_chat_request(body, target)
    error = caught.value
    assert error.status == 400
    assert error.body()["error"]["type"] == "invalid_request_error"
    return error


def test_image_on_text_only_model(catalog: Catalog) -> None:
    error = rejected(with_image(), model(catalog, "deepseek-chat"))
    assert error.message == "Model 'deepseek-chat' does not support image inputs."
    assert error.param == "messages[1].content[1]"
    assert error.code == "unsupported_value"


def test_image_on_vision_model_passes(catalog: Catalog) -> None:
    check_chat_request(with_image(), model(catalog, "gpt-4o"))


def test_text_parts_on_text_only_model_pass(catalog: Catalog) -> None:
    body = chat_body()
    body["messages"][0]["content"] = [{"type": "text", "text": "hi"}]
    check_chat_request(body, model(catalog, "o3-mini"))


TOOL = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("param", "value"),
    [("tools", [TOOL]), ("functions", [{"name": "get", "parameters": {"type": "object"}}])],
)
def test_tools_on_model_without_tools(catalog: Catalog, param: str, value: Any) -> None:
    error = rejected(chat_body(**{param: value}), model(catalog, "deepseek-r1"))
    assert error.message == "Model 'deepseek-r1' does not support tools (function calling)."
    assert error.param == param


def test_empty_tools_list_is_not_a_tool_request(catalog: Catalog) -> None:
    check_chat_request(chat_body(tools=[]), model(catalog, "deepseek-r1"))


def test_tools_on_tool_model_pass(catalog: Catalog) -> None:
    check_chat_request(chat_body(tools=[TOOL], tool_choice="auto"), model(catalog, "deepseek-chat"))


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}],
)
def test_json_output_on_model_without_json(catalog: Catalog, response_format: Any) -> None:
    error = rejected(chat_body(response_format=response_format), model(catalog, "deepseek-r1"))
    assert error.message.startswith("Model 'deepseek-r1' does not support JSON output")
    assert response_format["type"] in error.message
    assert error.param == "response_format"


def test_text_response_format_passes_everywhere(catalog: Catalog) -> None:
    check_chat_request(chat_body(response_format={"type": "text"}), model(catalog, "deepseek-r1"))


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_output_limit_above_the_models_maximum(catalog: Catalog, param: str) -> None:
    gpt_4o = model(catalog, "gpt-4o")
    check_chat_request(chat_body(**{param: gpt_4o.max_output_tokens}), gpt_4o)
    error = rejected(chat_body(**{param: 16385}), gpt_4o)
    assert error.message == (
        f"{param} is too large: 16385. Model 'gpt-4o' supports at most 16384 output tokens."
    )
    assert error.param == param


@pytest.mark.parametrize("value", [0, -5, "100", 1.5, True])
def test_output_limit_must_be_a_positive_integer(catalog: Catalog, value: Any) -> None:
    error = rejected(chat_body(max_tokens=value), model(catalog, "gpt-4o"))
    assert error.param == "max_tokens"


def test_requested_max_output_prefers_max_completion_tokens() -> None:
    assert requested_max_output_tokens(chat_body(max_tokens=10, max_completion_tokens=20)) == 20
    assert requested_max_output_tokens(chat_body(max_tokens=10)) == 10
    assert requested_max_output_tokens(chat_body()) is None


def test_checks_tolerate_malformed_bodies(catalog: Catalog) -> None:
    # Shape errors are reported by request validation, not turned into crashes here.
    check_chat_request({"messages": "nope"}, model(catalog, "deepseek-r1"))
    check_chat_request({"messages": [None, {"content": [None, 3]}]}, model(catalog, "deepseek-r1"))


# --- estimate_prompt_tokens ---------------------------------------------------------------------


def test_estimate_over_counts_english_text() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 200  # ~2,000 real tokens
    estimate = estimate_prompt_tokens({"messages": [{"role": "user", "content": text}]})
    assert estimate >= len(text.encode()) // 3
    assert estimate > 2000


def test_estimate_counts_images_at_the_given_worst_case_not_their_bytes() -> None:
    text_only = estimate_prompt_tokens(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]}
    )
    body = with_image()
    body["messages"] = body["messages"][1:]
    assert estimate_prompt_tokens(body, tokens_per_image=1000) == text_only + 1000
    assert estimate_prompt_tokens(body, tokens_per_image=48169) == text_only + 48169


def test_estimate_counts_tools_tool_calls_and_messages() -> None:
    base = chat_body()
    with_tools = chat_body(tools=[TOOL] * 10)
    assert estimate_prompt_tokens(with_tools) > estimate_prompt_tokens(base) + 100
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get", "arguments": "x" * 300}}
        ],
    }
    with_call = chat_body()
    with_call["messages"].append(call)
    assert estimate_prompt_tokens(with_call) >= estimate_prompt_tokens(base) + 100


def test_estimate_of_empty_request_is_small_but_positive() -> None:
    assert 0 < estimate_prompt_tokens({}) < 100
