"""Checks of the request body that need no model knowledge, with OpenAI's error wording.

Unknown fields are passed through untouched: providers add parameters faster than we do.
"""

from __future__ import annotations

import re
from typing import Any

from aig_common.errors import APIError, json_type

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def invalid_type(param: str, expected: str, value: Any) -> APIError:
    return APIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, message: str) -> APIError:
    return APIError(
        400, f"Invalid value for '{param}': {message}", param=param, code="invalid_value"
    )


def missing(param: str) -> APIError:
    return APIError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(body: dict[str, Any], param: str, low: float, high: float) -> None:
    value = body.get(param)
    if value is None:
        return
    if not _is_number(value):
        raise invalid_type(param, "a number", value)
    if not low <= value <= high:
        raise invalid_value(param, f"expected a value between {low:g} and {high:g}, got {value}.")


def _check_positive_int(body: dict[str, Any], param: str, high: int | None = None) -> None:
    value = body.get(param)
    if value is None:
        return
    if not _is_int(value):
        raise invalid_type(param, "an integer", value)
    if value < 1 or (high is not None and value > high):
        limit = f" and at most {high}" if high is not None else ""
        raise invalid_value(param, f"expected an integer of at least 1{limit}, got {value}.")


def _check_content(index: int, role: str, message: dict[str, Any]) -> None:
    param = f"messages[{index}].content"
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise missing(param)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_type(param, "a string or an array of content parts", content)
    for part_index, part in enumerate(content):
        part_param = f"{param}[{part_index}]"
        if not isinstance(part, dict):
            raise invalid_type(part_param, "an object", part)
        part_type = part.get("type")
        if part_type == "text":
            if not isinstance(part.get("text"), str):
                raise invalid_type(f"{part_param}.text", "a string", part.get("text"))
        elif part_type == "image_url":
            if role != "user":
                raise invalid_value(
                    part_param, f"image content is only allowed in user messages, not '{role}'."
                )
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                raise invalid_value(
                    f"{part_param}.image_url.url",
                    "expected an http(s) URL or a data: URL with base64 image data.",
                )
        elif part_type in ("input_audio", "file", "refusal"):
            continue
        else:
            raise invalid_value(
                f"{part_param}.type", f"unsupported content part type {part_type!r}."
            )


def _check_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise APIError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_type(f"messages[{index}]", "an object", message)
        role = message.get("role")
        if role is None:
            raise missing(f"messages[{index}].role")
        if not isinstance(role, str):
            raise invalid_type(f"messages[{index}].role", "a string", role)
        if role not in _ROLES:
            raise invalid_value(
                f"messages[{index}].role",
                f"{role!r} is not one of {sorted(_ROLES)}.",
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise missing(f"messages[{index}].tool_call_id")
        if role != "tool" and "tool_call_id" in message:
            raise APIError(
                400,
                f"Unrecognized request argument supplied: messages[{index}].tool_call_id "
                f"(only 'tool' messages carry a tool_call_id).",
                param=f"messages[{index}].tool_call_id",
                code="unknown_parameter",
            )
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid_type(f"messages[{index}].name", "a string", name)
        _check_content(index, role, message)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            raise invalid_type(f"messages[{index}].tool_calls", "an array", tool_calls)


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    for index, tool in enumerate(tools or []):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(param, "an object", tool)
        if tool.get("type") != "function":
            raise invalid_value(f"{param}.type", "only 'function' tools are supported.")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise missing(f"{param}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise invalid_value(
                f"{param}.function.name",
                "expected a string of 1-64 characters from a-z, A-Z, 0-9, '_' and '-'.",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_type(f"{param}.function.parameters", "an object", parameters)
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise invalid_value("tool_choice", "expected 'none', 'auto', 'required' or an object.")
    elif not isinstance(choice, dict):
        raise invalid_type("tool_choice", "a string or an object", choice)


def _check_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    if not isinstance(response_format, dict):
        raise invalid_type("response_format", "an object", response_format)
    kind = response_format.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid_value(
            "response_format.type", "expected 'text', 'json_object' or 'json_schema'."
        )
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise missing("response_format.json_schema")
        if not isinstance(spec.get("name"), str):
            raise missing("response_format.json_schema.name")
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise invalid_type("response_format.json_schema.schema", "an object", schema)


def _check_model(model: Any) -> None:
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    if not model.strip():
        raise invalid_value("model", "expected a model id, got an empty string.")


def validate_chat_request(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise missing("model")
    _check_model(model)
    _check_messages(body)
    for flag in ("stream", "parallel_tool_calls", "logprobs"):
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            raise invalid_type(flag, "a boolean", body[flag])
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_type("stream_options", "an object", options)
        if not body.get("stream"):
            raise invalid_value("stream_options", "only allowed when 'stream' is true.")
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    _check_positive_int(body, "max_tokens")
    _check_positive_int(body, "max_completion_tokens")
    _check_positive_int(body, "n", 128)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid_type("stop", "a string or an array of strings", stop)
        if len(stop) > 4:
            raise invalid_value("stop", "at most 4 stop sequences are allowed.")
    _check_tools(body)
    _check_response_format(body)


def validate_embeddings_request(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise missing("model")
    _check_model(model)
    if "input" not in body:
        raise missing("input")
    value = body["input"]
    if not isinstance(value, str | list):
        raise invalid_type("input", "a string or an array", value)
    if value == "" or value == []:
        raise invalid_value("input", "expected a non-empty string or array.")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise invalid_value("encoding_format", "expected 'float' or 'base64'.")
    _check_positive_int(body, "dimensions")
