"""One reader of an OpenAI chat request, shared by every translation to another format.

It walks roles, content parts, image URLs (http(s) or base64 data URLs), assistant tool
calls with their JSON arguments, and tool results (matched to the call they answer), and
rejects what is malformed with an OpenAI-shaped 400 that names the offending `param`. A
translation (Anthropic, Gemini, and later the ingress dialects) then only builds its own
blocks from these typed messages. The same goes for `tools`, `tool_choice` and
`response_format` (read_tools, read_tool_choice, read_response_format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aig_common.errors import APIError

from .base import parse_data_url, text_of_content


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by http(s) `url`, or inline as `media_type` plus base64 `data`."""

    param: str
    url: str | None = None
    media_type: str | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserMessage:
    parts: list[TextPart | ImagePart]


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_call_id: str
    # The function the answered call named (Gemini needs it; OpenAI only sends the id).
    name: str
    text: str


Message = UserMessage | AssistantMessage | ToolResult


@dataclass(frozen=True, slots=True)
class Conversation:
    # System and developer messages, in order; most formats take them apart from the turns.
    system: list[str]
    messages: list[Message]


def read_messages(messages: Any) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array.", param="messages")
    system: list[str] = []
    read: list[Message] = []
    called: dict[str, str] = {}  # tool call id -> function name
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise APIError(400, "Each message must be an object.", param=param)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = text_of_content(content)
            if text:
                system.append(text)
        elif role == "user":
            read.append(UserMessage(_user_parts(content, param)))
        elif role == "assistant":
            calls = [
                _tool_call(call, f"{param}.tool_calls[{j}]")
                for j, call in enumerate(message.get("tool_calls") or [])
            ]
            called.update((call.id, call.name) for call in calls)
            read.append(AssistantMessage(text_of_content(content), calls))
        elif role == "tool":
            tool_call_id = message.get("tool_call_id")
            name = called.get(tool_call_id) if isinstance(tool_call_id, str) else None
            if name is None:
                raise APIError(
                    400,
                    f"Tool message has tool_call_id {tool_call_id!r}, which matches no "
                    "tool_calls entry of an earlier assistant message.",
                    param=f"{param}.tool_call_id",
                )
            read.append(ToolResult(str(tool_call_id), name, text_of_content(content)))
        else:
            raise APIError(400, f"Unsupported message role {role!r}.", param=f"{param}.role")
    return Conversation(system, read)


def no_turns() -> APIError:
    """For a conversation that translates to no turn at all (only system text, or empty)."""
    return APIError(400, "'messages' needs at least one user message.", param="messages")


def _user_parts(content: Any, param: str) -> list[TextPart | ImagePart]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise APIError(400, "User content must be a string or an array of parts.", param=param)
    parts: list[TextPart | ImagePart] = []
    for j, part in enumerate(content):
        part_param = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_image(url, f"{part_param}.image_url.url"))
        else:
            raise APIError(
                400, f"Content part type {kind!r} is not supported by this model.", param=part_param
            )
    return parts


def _image(url: Any, param: str) -> ImagePart:
    if not isinstance(url, str):
        raise APIError(400, "image_url.url must be a string.", param=param)
    if url.startswith(("http://", "https://")):
        return ImagePart(param, url=url)
    media_type, data = parse_data_url(url, param)
    return ImagePart(param, media_type=media_type, data=data)


def _tool_call(call: Any, param: str) -> ToolCall:
    function = call.get("function") if isinstance(call, dict) else None
    if (
        not isinstance(function, dict)
        or not isinstance(call.get("id"), str)
        or not isinstance(function.get("name"), str)
    ):
        raise APIError(400, "Each tool call needs an id and a function name.", param=param)
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        arguments = None
    if not isinstance(arguments, dict):
        raise APIError(
            400,
            "Tool call arguments must be a JSON object encoded as a string.",
            param=f"{param}.function.arguments",
        )
    return ToolCall(call["id"], function["name"], arguments)


def image_urls(messages: Any) -> list[str]:
    """The http(s) image URLs in user messages, each once, in order of appearance
    (without validating anything: the full read happens when the request is built)."""
    urls: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in urls:
                urls.append(url)
    return urls


def append_turn(turns: list[dict[str, Any]], role: str, items: list[Any], key: str) -> None:
    """Adds `items` as a turn of `role`, merged into the previous turn when it has the same
    role: Anthropic and Gemini both want alternating roles and reject an empty turn."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str | None
    # JSON Schema of the arguments, None when the tool declares none.
    parameters: dict[str, Any] | None


def read_tools(tools: Any) -> list[FunctionTool]:
    read: list[FunctionTool] = []
    for index, tool in enumerate(tools or []):
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise APIError(
                400, "Only tools of type 'function' are supported.", param=f"{param}.type"
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise APIError(400, "Each tool needs function.name.", param=f"{param}.function.name")
        description = function.get("description")
        parameters = function.get("parameters")
        read.append(
            FunctionTool(
                function["name"],
                description if isinstance(description, str) else None,
                parameters if isinstance(parameters, dict) else None,
            )
        )
    return read


@dataclass(frozen=True, slots=True)
class NamedTool:
    """`tool_choice` naming one function the model must call."""

    name: str


ToolChoice = Literal["auto", "required", "none"] | NamedTool | None


def read_tool_choice(tool_choice: Any) -> ToolChoice:
    if tool_choice is None:
        return None
    if tool_choice in ("auto", "required", "none"):
        return tool_choice
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") == "function"
        and isinstance(tool_choice.get("function"), dict)
        and isinstance(tool_choice["function"].get("name"), str)
    ):
        return NamedTool(tool_choice["function"]["name"])
    raise APIError(400, "Unsupported tool_choice.", param="tool_choice")


@dataclass(frozen=True, slots=True)
class JsonSchemaFormat:
    schema: dict[str, Any]


ResponseFormat = Literal["json_object"] | JsonSchemaFormat | None


def read_response_format(response_format: Any) -> ResponseFormat:
    """None for plain text, "json_object", or the JSON Schema the answer must follow."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json_object"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise APIError(
                400,
                "response_format.json_schema.schema must be a JSON Schema object.",
                param="response_format.json_schema.schema",
            )
        return JsonSchemaFormat(schema)
    raise APIError(400, f"Unsupported response_format type {kind!r}.", param="response_format.type")
