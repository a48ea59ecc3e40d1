"""OpenAI chat completions ⇄ Anthropic Messages API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aig_common.errors import APIError
from router.adapters.base import (
    ChunkFactory,
    TokenUsage,
    UpstreamError,
    assistant_choice,
    body_excerpt,
    completion_object,
    make_upstream_error,
    parse_json_body,
)
from router.adapters.messages import (
    AssistantMessage,
    FunctionTool,
    ImagePart,
    JsonSchemaFormat,
    NamedTool,
    TextPart,
    ToolChoice,
    UserMessage,
    append_turn,
    no_turns,
    read_messages,
    read_response_format,
    read_tool_choice,
    read_tools,
)

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Anthropic has no plain JSON mode, so json_object becomes an instruction. We do not prefill
# the assistant turn with "{": the prefilled brace is not echoed back, so every response
# path would have to re-add it; it cannot be combined with a conversation that already
# ends in an assistant turn nor with extended thinking; and current Claude models follow
# this instruction reliably on their own.
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no Markdown code "
    "fences, no text before or after the object."
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error types that arrive without an HTTP status (in an `event: error`).
STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --- request -----------------------------------------------------------------------------


def build_messages_request(
    body: dict[str, Any], upstream_model: str, *, max_output_tokens: int, stream: bool
) -> dict[str, Any]:
    _reject_unsupported(body)
    system, messages = _translate_messages(body.get("messages"))
    request: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(body, max_output_tokens),
        "messages": messages,
    }

    instructions = list(system)
    output_format = read_response_format(body.get("response_format"))
    if output_format == "json_object":
        instructions.append(JSON_OBJECT_INSTRUCTION)
    elif isinstance(output_format, JsonSchemaFormat):
        request["output_config"] = {
            "format": {"type": "json_schema", "schema": output_format.schema}
        }
    if instructions:
        request["system"] = "\n\n".join(instructions)

    tools = body.get("tools")
    if tools:
        request["tools"] = [_tool(tool) for tool in read_tools(tools)]
        tool_choice = _tool_choice(
            read_tool_choice(body.get("tool_choice")), body.get("parallel_tool_calls")
        )
        if tool_choice is not None:
            request["tool_choice"] = tool_choice

    stop = body.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = list(stop)

    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)):
        # OpenAI accepts 0 to 2, Anthropic 0 to 1.
        request["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if isinstance(body.get("top_p"), (int, float)):
        request["top_p"] = body["top_p"]

    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    if stream:
        request["stream"] = True
    return request


def _reject_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise APIError(400, "This model supports only n=1.", param="n")
    if body.get("logprobs"):
        raise APIError(400, "This model does not return logprobs.", param="logprobs")
    # seed, penalties and logit_bias have no Anthropic equivalent; like other OpenAI-compatible
    # gateways we ignore them rather than fail requests that merely pass defaults.


def _max_tokens(body: dict[str, Any], max_output_tokens: int) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise APIError(400, f"'{field}' must be a positive integer.", param=field)
        # Anthropic rejects a max_tokens above the model's limit; capping gives the
        # client the most the model can produce, which is what a large value asks for.
        return min(value, max_output_tokens)
    return max_output_tokens


def _tool(tool: FunctionTool) -> dict[str, Any]:
    translated: dict[str, Any] = {
        "name": tool.name,
        "input_schema": tool.parameters or {"type": "object", "properties": {}},
    }
    if tool.description is not None:
        translated["description"] = tool.description
    return translated


_TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none"}


def _tool_choice(tool_choice: ToolChoice, parallel_tool_calls: Any) -> dict[str, Any] | None:
    choice: dict[str, Any] | None
    if tool_choice is None:
        choice = None
    elif isinstance(tool_choice, NamedTool):
        choice = {"type": "tool", "name": tool_choice.name}
    else:
        choice = {"type": _TOOL_CHOICE_TYPES[tool_choice]}
    if parallel_tool_calls is False:
        if choice is None:
            choice = {"type": "auto"}
        if choice["type"] != "none":  # Anthropic rejects the flag on "none"
            choice["disable_parallel_tool_use"] = True
    return choice


def _translate_messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    conversation = read_messages(messages)
    turns: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        append_turn(turns, role, blocks, "content")

    for message in conversation.messages:
        if isinstance(message, UserMessage):
            append("user", [_user_block(part) for part in message.parts])
        elif isinstance(message, AssistantMessage):
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": message.text}] if message.text else []
            )
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            )
            append("assistant", blocks)
        else:
            result = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.text,
            }
            append("user", [result])
    if not turns:
        raise no_turns()
    return conversation.system, turns


def _user_block(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    if part.media_type not in IMAGE_MEDIA_TYPES:
        raise APIError(
            400,
            f"Image type {part.media_type!r} is not supported; use JPEG, PNG, GIF or WebP.",
            param=part.param,
        )
    source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    return {"type": "image", "source": source}


# --- response ----------------------------------------------------------------------------


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> TokenUsage:
    usage = usage or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    # Writes by lifetime, when the API breaks them down; without a breakdown every write
    # is a 5-minute one (the default `cache_control` ttl).
    lifetimes = usage.get("cache_creation")
    written_1h = 0
    if isinstance(lifetimes, Mapping):
        written_1h = min(int(lifetimes.get("ephemeral_1h_input_tokens") or 0), written)
    # input_tokens excludes cached and written tokens; the prompt is the sum of all three.
    prompt = int(usage.get("input_tokens") or 0) + written + cache_read
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_prompt_tokens=cache_read,
        cache_write_prompt_tokens=written - written_1h,
        cache_write_1h_prompt_tokens=written_1h,
    )


def finish_reason_for(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def completion_from_message(
    payload: dict[str, Any], *, public_model: str, completion_id: str, created: int
) -> tuple[dict[str, Any], TokenUsage]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in payload.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    usage = usage_from_anthropic(payload.get("usage"))
    choice = assistant_choice(
        index=0,
        text="".join(texts),
        tool_calls=tool_calls,
        finish_reason=finish_reason_for(payload.get("stop_reason")),
    )
    completion = completion_object(
        completion_id=completion_id,
        created=created,
        model=public_model,
        choices=[choice],
        usage=usage,
    )
    return completion, usage


class MessagesStreamTranslator:
    """Translates Anthropic stream events into OpenAI chunks, one event at a time."""

    def __init__(
        self, *, public_model: str, completion_id: str, created: int, include_usage: bool
    ) -> None:
        self._chunks = ChunkFactory(
            completion_id=completion_id,
            created=created,
            model=public_model,
            include_usage=include_usage,
        )
        self._raw_usage: dict[str, Any] = {}
        self._started = False
        self._finished = False
        # Anthropic block indexes count text blocks too; OpenAI tool indexes must not.
        self._tool_index_by_block: dict[int, int] = {}
        self.usage: TokenUsage | None = None
        self.done = False

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        if kind == "error" or event == "error":
            raise error_from_event(data)
        if self.done:
            return []
        out: list[dict[str, Any]] = []
        if kind == "message_start":
            self._record_usage((data.get("message") or {}).get("usage"))
            self._start(out)
        elif kind == "content_block_start":
            self._start(out)
            self._block_start(data, out)
        elif kind == "content_block_delta":
            self._start(out)
            self._block_delta(data, out)
        elif kind == "message_delta":
            self._record_usage(data.get("usage"))
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            self._finish(out, finish_reason_for(stop_reason))
        elif kind == "message_stop":
            self._finish(out, "stop")
            self.done = True
            if self._chunks.include_usage and self.usage is not None:
                out.append(self._chunks.usage_chunk(self.usage))
        # ping, content_block_stop and event types added later carry nothing for OpenAI.
        return out

    def _start(self, out: list[dict[str, Any]]) -> None:
        if not self._started:
            self._started = True
            out.append(self._chunks.chunk({"role": "assistant", "content": ""}))

    def _finish(self, out: list[dict[str, Any]], finish_reason: str) -> None:
        self._start(out)
        if not self._finished:
            self._finished = True
            out.append(self._chunks.chunk({}, finish_reason=finish_reason))

    def _block_start(self, data: dict[str, Any], out: list[dict[str, Any]]) -> None:
        block = data.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            out.append(self._chunks.chunk({"content": block["text"]}))
        elif block.get("type") == "tool_use":
            tool_index = len(self._tool_index_by_block)
            self._tool_index_by_block[data.get("index", 0)] = tool_index
            call = {
                "index": tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            out.append(self._chunks.chunk({"tool_calls": [call]}))

    def _block_delta(self, data: dict[str, Any], out: list[dict[str, Any]]) -> None:
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            out.append(self._chunks.chunk({"content": delta["text"]}))
        elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tool_index_by_block.get(data.get("index", 0))
            if tool_index is None:
                return
            call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
            out.append(self._chunks.chunk({"tool_calls": [call]}))

    def _record_usage(self, usage: Mapping[str, Any] | None) -> None:
        if usage:
            # message_delta repeats fields with cumulative values; the latest one wins.
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = usage_from_anthropic(self._raw_usage)


# --- errors ------------------------------------------------------------------------------


def error_from_event(data: Mapping[str, Any]) -> UpstreamError:
    """An `event: error` received after HTTP 200, e.g. overloaded_error."""
    error = data.get("error")
    if not isinstance(error, dict):
        error = {}
    error_type = str(error.get("type") or "api_error")
    upstream_status = STATUS_BY_ERROR_TYPE.get(error_type, 500)
    return make_upstream_error(
        upstream_status, str(error.get("message") or "upstream stream failed"), code=error_type
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    payload = parse_json_body(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return make_upstream_error(status, body_excerpt(body), headers=headers)
    return make_upstream_error(
        status,
        str(error.get("message") or ""),
        # Anthropic's error type ("overloaded_error", …) is the most useful machine code.
        code=error.get("type") if isinstance(error.get("type"), str) else None,
        headers=headers,
    )
