"""One reader of OpenAI chat `messages`, shared by every translation to another format.

It walks roles, content parts, image URLs (http(s) or base64 data URLs), assistant tool
calls with their JSON arguments, and tool results (matched to the call they answer), and
rejects what is malformed with an OpenAI-shaped 400 that names the offending `param`. A
translation (Anthropic, Gemini, and later the ingress dialects) then only builds its own
blocks from these typed messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

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
