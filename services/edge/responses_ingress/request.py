"""OpenAI Responses API requests, turned into the chat completions body the router runs.

Pure functions, no I/O: `parse_request` checks a `/v1/responses` body and normalises its
input into Responses items (with ids, as `input_items` lists them); `chat_body` turns
those items, plus any conversation rebuilt from `previous_response_id`, into the internal
OpenAI Chat Completions body that admission reserves for and the router translates to
each provider. `native_body` is the client's own body made self-contained (the stored
conversation spelled out, nothing kept upstream), which the router sends untranslated to
a provider that speaks the Responses API (OpenAI). Errors name the Responses parameter the
client sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aig_common.errors import APIError

from ..validation import invalid_type, invalid_value, missing

Item = dict[str, Any]

# router.proto NativeBody.dialect for a /v1/responses body.
NATIVE_DIALECT = "openai.responses"
# OpenAI refuses a smaller `max_output_tokens`; a call admission clamps below it is served
# through the chat translation instead, which takes any limit.
NATIVE_MIN_OUTPUT_TOKENS = 16
# Fields of the client's body that never go upstream as sent: aig keeps conversations
# itself, so the provider gets them spelled out in `input` (`native_body`).
_NOT_PASSED = ("aig", "previous_response_id", "input")

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Responses parameters that need a part of OpenAI's platform aig does not run.
_UNSUPPORTED = {
    "background": "background responses are not supported; omit 'background'.",
    "conversation": "conversations are not supported; use 'previous_response_id'.",
    "prompt": "stored prompt templates are not supported; send 'instructions' and 'input'.",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def unsupported(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_parameter")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A checked /v1/responses body: what the call runs and what its response echoes."""

    model: str
    # This request's own input, as Responses items with ids (what `input_items` lists).
    input_items: list[Item]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[Item] = field(default_factory=list)
    tool_choice: str | Item = "auto"
    parallel_tool_calls: bool = True
    text_format: Item = field(default_factory=lambda: {"type": "text"})
    reasoning_effort: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    # The gateway's own routing options (`aig.fallbacks`), passed to the router as in chat.
    aig: dict[str, Any] | None = None


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """Checks a /v1/responses body; raises APIError(400) naming the parameter at fault."""
    for param, message in _UNSUPPORTED.items():
        if body.get(param) not in (None, False):
            raise unsupported(param, message)
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_value("model", "expected a model id.")
    previous = _optional_str(body, "previous_response_id")
    instructions = _optional_str(body, "instructions")
    raw_input = body.get("input")
    if raw_input is None and previous is None and instructions is None:
        raise missing("input")
    reasoning = _object(body, "reasoning")
    effort = reasoning.get("effort")
    if effort is not None and effort not in _REASONING_EFFORTS:
        raise invalid_value("reasoning.effort", f"expected one of {list(_REASONING_EFFORTS)}.")
    metadata = _object(body, "metadata")
    if len(metadata) > 16 or not all(
        isinstance(value, str) and len(key) <= 64 and len(value) <= 512
        for key, value in metadata.items()
    ):
        raise invalid_value(
            "metadata", "expected at most 16 string values (keys ≤ 64, values ≤ 512 chars)."
        )
    return ResponsesRequest(
        model=model,
        input_items=_input_items(raw_input),
        instructions=instructions,
        previous_response_id=previous,
        store=_flag(body, "store", default=True),
        stream=_flag(body, "stream", default=False),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice", "auto")),
        parallel_tool_calls=_flag(body, "parallel_tool_calls", default=True),
        text_format=_text_format(_object(body, "text").get("format")),
        reasoning_effort=effort,
        max_output_tokens=_positive_int(body, "max_output_tokens"),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        metadata=metadata,
        user=_optional_str(body, "user") or _optional_str(body, "safety_identifier"),
        aig=_object(body, "aig") or None,
    )


def chat_body(request: ResponsesRequest, history: list[Item], *, reasoning: bool) -> dict[str, Any]:
    """The chat completions body for `request` after the stored conversation `history`
    (empty without `previous_response_id`). `reasoning`: the model takes reasoning_effort."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    messages.extend(chat_messages([*history, *request.input_items]))
    if not messages:
        raise missing("input")
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    key: tool[key]
                    for key in ("name", "description", "parameters", "strict")
                    if tool.get(key) is not None
                },
            }
            for tool in request.tools
        ]
        body["tool_choice"] = _chat_tool_choice(request.tool_choice)
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    response_format = _chat_response_format(request.text_format)
    if response_format is not None:
        body["response_format"] = response_format
    if request.reasoning_effort is not None and reasoning:
        body["reasoning_effort"] = request.reasoning_effort
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "user", "aig"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def native_body(
    body: dict[str, Any], request: ResponsesRequest, history: list[Item], *, reasoning: bool
) -> dict[str, Any]:
    """The client's /v1/responses `body` for a provider that speaks the Responses API.

    Everything the client sent goes as it is (tools, text.format, reasoning, include,
    instructions...), except what only aig can answer: the conversation `history` that
    `previous_response_id` named and the stored items `item_reference`s named are spelled
    out in `input`, `previous_response_id` and `aig` are dropped, and `store` is false, so
    the provider keeps nothing: aig stores the response itself, whichever route served.
    `reasoning` as for `chat_body`: a model that takes no reasoning settings is not sent
    the client's (OpenAI refuses them), as a chat call would not be."""
    native = {key: value for key, value in body.items() if key not in _NOT_PASSED}
    if not reasoning:
        native.pop("reasoning", None)
    items = upstream_items([*history, *request.input_items])
    if items:
        native["input"] = items
    native["store"] = False
    return native


def upstream_items(items: list[Item]) -> list[Item]:
    """aig's Responses items as a provider that keeps nothing (`store: false`) accepts
    them: without aig's item ids, which the provider never issued; reasoning items only
    when they carry their `encrypted_content` (the provider cannot look up one by id)."""
    upstream: list[Item] = []
    for item in items:
        kind = item.get("type")
        if kind == "item_reference":
            continue
        if kind == "reasoning":
            if isinstance(item.get("encrypted_content"), str):
                upstream.append(item)
            continue
        clean = {key: value for key, value in item.items() if key != "id"}
        content = clean.get("content")
        if isinstance(content, list):
            clean["content"] = [
                {key: value for key, value in part.items() if value is not None}
                if isinstance(part, dict)
                else part
                for part in content
            ]
        upstream.append(clean)
    return upstream


def chat_messages(items: list[Item]) -> list[dict[str, Any]]:
    """Responses items → chat messages. Function calls that follow an assistant turn join
    its `tool_calls`, as one chat completion holds both text and calls."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
    return messages


def _chat_message(item: Item) -> dict[str, Any]:
    role = item["role"]
    parts = item["content"]
    if role == "assistant":
        text = "".join(p.get("text") or p.get("refusal") or "" for p in parts)
        return {"role": "assistant", "content": text}
    if all(part["type"] == "input_text" for part in parts):
        # A plain string, as chat clients send it: identical prompts, identical bills.
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    content: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_text":
            content.append({"type": "text", "text": part["text"]})
        else:
            image = {"url": part["image_url"]}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            content.append({"type": "image_url", "image_url": image})
    return {"role": role, "content": content}


def _chat_tool_choice(choice: str | Item) -> str | Item:
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice["name"]}}


def _chat_response_format(text_format: Item) -> Item | None:
    kind = text_format["type"]
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = {
            key: text_format[key]
            for key in ("name", "description", "schema", "strict")
            if text_format.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": spec}
    return None


# --- input items ---------------------------------------------------------------------


def _input_items(value: Any) -> list[Item]:
    if value is None:
        return []
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise invalid_type("input", "a string or an array of input items", value)
    return [_input_item(index, item) for index, item in enumerate(value)]


def _message(role: str, content: list[Item], item_id: str | None = None) -> Item:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": "completed",
        "role": role,
        "content": content,
    }


def _input_item(index: int, item: Any) -> Item:
    param = f"input[{index}]"
    if not isinstance(item, dict):
        raise invalid_type(param, "an object", item)
    kind = item.get("type", "message" if "role" in item else None)
    item_id = item.get("id") if isinstance(item.get("id"), str) else None
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise invalid_value(f"{param}.role", f"expected one of {list(_MESSAGE_ROLES)}.")
        return _message(role, _content(f"{param}.content", role, item.get("content")), item_id)
    if kind == "function_call":
        call = {name: _required_str(item, name, param) for name in ("call_id", "name", "arguments")}
        return {
            "type": "function_call",
            "id": item_id or new_id("fc"),
            "status": "completed",
            **call,
        }
    if kind == "function_call_output":
        return {
            "type": "function_call_output",
            "id": item_id or new_id("fco"),
            "status": "completed",
            "call_id": _required_str(item, "call_id", param),
            "output": _tool_output(f"{param}.output", item.get("output")),
        }
    if kind == "item_reference":
        # An earlier output item by id (the Vercel AI SDK sends these when `store` is on);
        # the routes replace it with the stored item before anything else reads the input.
        return {"type": "item_reference", "id": _required_str(item, "id", param)}
    if kind == "reasoning":
        # Another model's reasoning: nothing a chat turn can carry, so translation drops
        # it (agents that replay whole outputs keep working). Its encrypted content is
        # kept for the Responses API, which continues from it (`upstream_items`).
        reasoning: Item = {"type": "reasoning", "id": item_id or new_id("rs"), "summary": []}
        summary = item.get("summary")
        if isinstance(summary, list):
            reasoning["summary"] = summary
        if isinstance(item.get("encrypted_content"), str):
            reasoning["encrypted_content"] = item["encrypted_content"]
        return reasoning
    raise invalid_value(
        f"{param}.type",
        f"unsupported input item type {kind!r}; expected 'message', 'function_call', "
        "'function_call_output' or 'item_reference'.",
    )


def _content(param: str, role: str, value: Any) -> list[Item]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(value, str):
        part: Item = {"type": text_type, "text": value}
        if role == "assistant":
            part["annotations"] = []
        return [part]
    if not isinstance(value, list):
        raise invalid_type(param, "a string or an array of content parts", value)
    parts: list[Item] = []
    for index, raw in enumerate(value):
        part_param = f"{param}[{index}]"
        if not isinstance(raw, dict):
            raise invalid_type(part_param, "an object", raw)
        kind = raw.get("type")
        if kind in ("input_text", "output_text"):
            text = raw.get("text")
            if not isinstance(text, str):
                raise invalid_type(f"{part_param}.text", "a string", text)
            parts.append({**raw, "type": kind, "text": text})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "refusal", "refusal": str(raw.get("refusal", ""))})
        elif kind == "input_image" and role == "user":
            url = raw.get("image_url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                raise invalid_value(
                    f"{part_param}.image_url",
                    "expected an http(s) URL or a data: URL with base64 image data "
                    "(uploaded file ids are not supported).",
                )
            parts.append({"type": "input_image", "image_url": url, "detail": raw.get("detail")})
        else:
            raise invalid_value(
                f"{part_param}.type",
                f"unsupported content part type {kind!r} in a {role!r} message.",
            )
    return parts


def _tool_output(param: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
        for part in value
    ):
        return "".join(str(part.get("text", "")) for part in value)
    raise invalid_type(param, "a string or an array of text parts", value)


# --- tools, formats and scalars -----------------------------------------------------------


def _tools(value: Any) -> list[Item]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type("tools", "an array", value)
    tools: list[Item] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(param, "an object", tool)
        if tool.get("type") != "function":
            raise invalid_value(
                f"{param}.type",
                f"only 'function' tools are supported, got {tool.get('type')!r}.",
            )
        name = _required_str(tool, "name", param)
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_type(f"{param}.parameters", "an object", parameters)
        tools.append(
            {
                "type": "function",
                "name": name,
                "description": tool.get("description"),
                "parameters": parameters,
                "strict": tool.get("strict"),
            }
        )
    return tools


def _tool_choice(value: Any) -> str | Item:
    if isinstance(value, str):
        if value not in _TOOL_CHOICE_MODES:
            raise invalid_value("tool_choice", f"expected one of {list(_TOOL_CHOICE_MODES)}.")
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        return {"type": "function", "name": _required_str(value, "name", "tool_choice")}
    raise invalid_value(
        "tool_choice",
        "expected 'none', 'auto', 'required' or {'type': 'function', 'name': ...}.",
    )


def _text_format(value: Any) -> Item:
    if value is None:
        return {"type": "text"}
    if not isinstance(value, dict):
        raise invalid_type("text.format", "an object", value)
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        _required_str(value, "name", "text.format")
        schema = value.get("schema")
        if not isinstance(schema, dict):
            raise invalid_type("text.format.schema", "an object", schema)
        return {
            key: value[key]
            for key in ("type", "name", "description", "schema", "strict")
            if value.get(key) is not None
        }
    raise invalid_value("text.format.type", "expected 'text', 'json_object' or 'json_schema'.")


def _object(body: dict[str, Any], param: str) -> dict[str, Any]:
    value = body.get(param)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def _optional_str(body: dict[str, Any], param: str) -> str | None:
    value = body.get(param)
    if value is not None and not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    return value


def _required_str(item: dict[str, Any], name: str, parent: str) -> str:
    value = item.get(name)
    if value is None:
        raise missing(f"{parent}.{name}")
    if not isinstance(value, str):
        raise invalid_type(f"{parent}.{name}", "a string", value)
    return value


def _flag(body: dict[str, Any], param: str, *, default: bool) -> bool:
    value = body.get(param)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_type(param, "a boolean", value)
    return value


def _positive_int(body: dict[str, Any], param: str) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(param, "an integer", value)
    if value < 1:
        raise invalid_value(param, f"expected an integer of at least 1, got {value}.")
    return value


def _number(body: dict[str, Any], param: str, low: float, high: float) -> float | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_type(param, "a number", value)
    if not low <= value <= high:
        raise invalid_value(param, f"expected a value between {low:g} and {high:g}, got {value}.")
    return float(value)
