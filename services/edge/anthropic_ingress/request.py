"""An Anthropic Messages request, checked and turned into the internal OpenAI chat body.

Admission prices that body the way it prices chat, and the router plans, checks and fails
over on it, so both ingresses reserve, fail over and bill alike. A route served by Anthropic
is sent the client's own request instead (routes.py, router.proto NativeBody), so Claude
gets what this translation drops (thinking, `cache_control`); every other route is served
from the translation: the router's adapters turn it into Gemini's or OpenAI's wire format.

What maps where:
- `system` (a string or text blocks) → a leading system message of text parts.
- `user` turns: text and image blocks (base64 → a data URL, url → the URL) → a user message;
  `tool_result` blocks → one `tool` message each, placed before the turn's other blocks
  (Anthropic asks for them first; chat needs them right after the assistant's calls).
  Images inside a tool result follow in a user message, as chat's tool messages hold text.
- `assistant` turns: text → content, `tool_use` → `tool_calls` (input as a JSON string).
  `thinking` / `redacted_thinking` blocks are dropped (see `thinking` below).
- `max_tokens` (required) → `max_completion_tokens`, which admission reserves against;
  `stop_sequences` → `stop`; `temperature`, `top_p` as they are; `metadata.user_id` → `user`.
- `tools` → function tools; `tool_choice` auto/any/tool/none → auto/required/named/none,
  `disable_parallel_tool_use` → `parallel_tool_calls: false`.
- `output_config.format` (a JSON schema) → `response_format` json_schema.
- `thinking` (a token budget) and `output_config.effort` become chat's `reasoning_effort`
  for catalog models with `capabilities.reasoning` (OpenAI's o-series and GPT-5 family), and
  are dropped from the others' translations, whose adapters have nothing to map them to: a
  budget under 4,096 tokens is `low`, under 16,384 `medium`, more `high`; `effort` wins when
  both are given (`xhigh`/`max` → `high`, chat's most). Disabled or adaptive thinking leaves the
  model's default. Thinking blocks come back only from Claude (passed through); a
  translated answer carries none.
- `top_k`, `cache_control`, `service_tier` and fields added later are left out of the
  translation, as chat ignores parameters a provider lacks (Claude still gets them). The
  gateway's own `aig` options pass through.

Errors are 400s whose `param` and wording name Anthropic's fields.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aig_common.errors import APIError, json_type

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="invalid_value")


def _missing(param: str) -> APIError:
    return APIError(400, f"{param}: Field required", param=param, code="missing_required_parameter")


def _wrong_type(param: str, expected: str, value: Any) -> APIError:
    return APIError(
        400,
        f"{param}: Input should be {expected}, not {json_type(value)}",
        param=param,
        code="invalid_type",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _blocks(value: Any, param: str) -> list[dict[str, Any]]:
    """Content as a list of block objects; a bare string is one text block."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise _wrong_type(param, "a string or an array of content blocks", value)
    for index, block in enumerate(value):
        if not isinstance(block, dict):
            raise _wrong_type(f"{param}.{index}", "an object", block)
        if not isinstance(block.get("type"), str):
            raise _missing(f"{param}.{index}.type")
    return value


def _text(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _wrong_type(f"{param}.text", "a string", text)
    return text


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _missing(f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in _IMAGE_TYPES:
            raise _invalid(
                f"{param}.source.media_type", f"expected one of {', '.join(_IMAGE_TYPES)}"
            )
        if not isinstance(data, str) or not data:
            raise _missing(f"{param}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        given = source.get("url")
        if not isinstance(given, str) or not given.startswith(("http://", "https://")):
            raise _invalid(f"{param}.source.url", "expected an http(s) URL")
        url = given
    else:
        raise _invalid(f"{param}.source.type", "expected 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], param: str) -> tuple[dict[str, Any], list[Any]]:
    """A tool message, and the images the result carried (for a user message after it)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _missing(f"{param}.tool_use_id")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[Any] = []
    for index, inner in enumerate(_blocks(content, f"{param}.content")):
        inner_param = f"{param}.content.{index}"
        if inner["type"] == "text":
            texts.append(_text(inner, inner_param))
        elif inner["type"] == "image":
            images.append(_image_part(inner, inner_param))
        else:
            raise _invalid(f"{inner_param}.type", "a tool result holds text and image blocks")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        # Chat has no error flag on tool messages: say it in the text the model reads.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _claude_only(block: dict[str, Any], claude_only: list[str]) -> str:
    """A block or tool only Claude reads (a document, a server tool, its results...), for a
    Claude model: kept out of the translation and named in `claude_only` (the call then
    goes to Anthropic alone, untranslated); its JSON is returned as a stand-in text, so
    admission still reserves for its size. Other models refuse such blocks with a 400."""
    claude_only.append(str(block.get("type")))
    return orjson.dumps(block).decode()


def _user_turn(
    content: Any, param: str, claude_only: list[str] | None = None
) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    result_images: list[Any] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, param)):
        block_param = f"{param}.{index}"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, block_param)})
        elif kind == "image":
            parts.append(_image_part(block, block_param))
        elif kind == "tool_result":
            message, images = _tool_result(block, block_param)
            tool_messages.append(message)
            result_images.extend(images)
        elif claude_only is not None:
            parts.append({"type": "text", "text": _claude_only(block, claude_only)})
        else:
            raise _invalid(
                f"{block_param}.type",
                f"unsupported content block type {kind!r} in a user message "
                "(text, image and tool_result are supported)",
            )
    messages = list(tool_messages)
    if result_images or parts:
        messages.append({"role": "user", "content": [*result_images, *parts]})
    return messages


def _assistant_turn(
    content: Any, param: str, claude_only: list[str] | None = None
) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, param)):
        block_param = f"{param}.{index}"
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, block_param))
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(call_id, str) or not call_id:
                raise _missing(f"{block_param}.id")
            if not isinstance(name, str) or not name:
                raise _missing(f"{block_param}.name")
            if not isinstance(arguments, dict):
                raise _wrong_type(f"{block_param}.input", "an object", arguments)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' reasoning: not forwarded, like `thinking` itself
        elif claude_only is not None:
            texts.append(_claude_only(block, claude_only))
        else:
            raise _invalid(
                f"{block_param}.type",
                f"unsupported content block type {kind!r} in an assistant message "
                "(text, tool_use and thinking are supported)",
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _system(value: Any, param: str = "system") -> dict[str, Any] | None:
    if value is None:
        return None
    parts = []
    for index, block in enumerate(_blocks(value, param)):
        if block["type"] != "text":
            raise _invalid(f"{param}.{index}.type", "system blocks must be text")
        parts.append({"type": "text", "text": _text(block, f"{param}.{index}")})
    return {"role": "system", "content": parts} if parts else None


def _messages(value: Any, claude_only: list[str] | None = None) -> list[dict[str, Any]]:
    if value is None:
        raise _missing("messages")
    if not isinstance(value, list):
        raise _wrong_type("messages", "an array", value)
    if not value:
        raise _invalid("messages", "at least one message is required")
    translated: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        param = f"messages.{index}"
        if not isinstance(message, dict):
            raise _wrong_type(param, "an object", message)
        role = message.get("role")
        if "content" not in message:
            raise _missing(f"{param}.content")
        if role == "user":
            translated.extend(_user_turn(message["content"], f"{param}.content", claude_only))
        elif role == "assistant":
            turn = _assistant_turn(message["content"], f"{param}.content", claude_only)
            translated.append(turn)
        elif role == "system":
            # Claude Code sends a model it does not know its environment as a system turn
            # mid-conversation; chat takes system messages anywhere, so it stays in place.
            system = _system(message["content"], f"{param}.content")
            if system is not None:
                translated.append(system)
        else:
            raise _invalid(f"{param}.role", "expected 'user', 'assistant' or 'system'")
    return translated


def _tools(value: Any, claude_only: list[str] | None = None) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _wrong_type("tools", "an array", value)
    tools = []
    for index, tool in enumerate(value):
        param = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _wrong_type(param, "an object", tool)
        if tool.get("type", "custom") != "custom" and claude_only is not None:
            _claude_only(tool, claude_only)
            continue
        if tool.get("type", "custom") != "custom":
            raise _invalid(
                f"{param}.type",
                f"the server tool {tool.get('type')!r} is not available through this gateway; "
                "define client tools with a name and an input_schema",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise _invalid(
                f"{param}.name", "expected 1-64 characters from a-z, A-Z, 0-9, '_' and '-'"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _wrong_type(f"{param}.input_schema", "an object", schema)
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if isinstance(description, str):
            function["description"] = description
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any, chat: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _wrong_type("tool_choice", "an object", value)
    kind = value.get("type")
    if kind == "tool":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise _missing("tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        chat["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise _invalid("tool_choice.type", "expected 'auto', 'any', 'tool' or 'none'")
    if value.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def _check_thinking(value: Any) -> None:
    if not isinstance(value, dict):
        raise _wrong_type("thinking", "an object", value)
    kind = value.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise _invalid("thinking.type", "expected 'enabled', 'disabled' or 'adaptive'")
    budget = value.get("budget_tokens")
    if kind == "enabled" and not (isinstance(budget, int) and _is_int(budget) and budget >= 1):
        raise _invalid("thinking.budget_tokens", "expected a positive integer")


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# Thinking budgets (tokens) below which chat's lower efforts are asked for.
_LOW_BUDGET_BELOW = 4096
_MEDIUM_BUDGET_BELOW = 16384


def _reasoning_effort(thinking: Any, output: Any) -> str | None:
    """The chat `reasoning_effort` a checked request asks for, if any."""
    effort = output.get("effort") if isinstance(output, dict) else None
    if effort is not None:
        if effort not in _EFFORTS:
            raise _invalid("output_config.effort", f"expected one of {', '.join(_EFFORTS)}")
        return _EFFORTS[effort]
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget: int = thinking["budget_tokens"]
    if budget < _LOW_BUDGET_BELOW:
        return "low"
    return "medium" if budget < _MEDIUM_BUDGET_BELOW else "high"


def _output_format(value: Any, chat: dict[str, Any]) -> None:
    """`output_config.format` (structured output) → chat's json_schema response_format,
    which each provider adapter renders its own way. `effort`: see _reasoning_effort."""
    if not isinstance(value, dict):
        raise _wrong_type("output_config", "an object", value)
    spec = value.get("format")
    if spec is None:
        return
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise _invalid("output_config.format.type", "expected 'json_schema'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise _wrong_type("output_config.format.schema", "an object", schema)
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def _check_number(body: dict[str, Any], param: str, low: float, high: float) -> None:
    value = body.get(param)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong_type(param, "a number", value)
    if not low <= value <= high:
        raise _invalid(param, f"expected a value between {low:g} and {high:g}, got {value}")


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model.strip():
        raise _wrong_type("model", "a model id string", model)
    return model


def prompt_to_chat(body: dict[str, Any], claude_only: list[str] | None = None) -> dict[str, Any]:
    """The parts of a Messages request that make up the prompt (model, system, messages,
    tools, tool_choice) as a chat body: all that `count_tokens` takes and needs. With
    `claude_only` (a Claude model), blocks and tools only Claude reads are collected there
    instead of refused."""
    chat: dict[str, Any] = {"model": check_model(body)}
    system = _system(body.get("system"))
    chat["messages"] = ([system] if system else []) + _messages(body.get("messages"), claude_only)
    if body.get("tools") is not None:
        tools = _tools(body["tools"], claude_only)
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    if body.get("thinking") is not None:
        _check_thinking(body["thinking"])
    return chat


def messages_to_chat(
    body: dict[str, Any], *, reasoning: bool = False, claude: bool = False
) -> dict[str, Any]:
    """The whole Messages request as the internal chat body, or a 400 naming the field.
    `reasoning`: the model takes chat's `reasoning_effort` (its catalog capability).
    `claude`: the model is served by Anthropic, which is sent the request untranslated, so
    documents, server tools and other blocks only Claude reads are accepted; a request
    with any is served by its own route alone (`aig.fallbacks: false`), as no translation
    could carry them elsewhere."""
    claude_only: list[str] | None = [] if claude else None
    chat = prompt_to_chat(body, claude_only)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _missing("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _invalid("max_tokens", "expected an integer of at least 1")
    chat["max_completion_tokens"] = max_tokens
    _check_number(body, "temperature", 0, 1)
    _check_number(body, "top_p", 0, 1)
    for param in ("temperature", "top_p"):
        if body.get(param) is not None:
            chat[param] = body[param]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _wrong_type("stop_sequences", "an array of strings", stops)
        if stops:
            chat["stop"] = stops
    output = body.get("output_config")
    if output is not None:
        _output_format(output, chat)
    effort = _reasoning_effort(body.get("thinking"), output)
    if effort is not None and reasoning:
        chat["reasoning_effort"] = effort
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    if stream:
        chat["stream"] = True
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if isinstance(body.get("aig"), dict):
        chat["aig"] = body["aig"]
    if claude_only:
        chat["aig"] = {**chat.get("aig", {}), "fallbacks": False}
    return chat
