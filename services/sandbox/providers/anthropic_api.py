"""Anthropic Messages API: `POST /anthropic/v1/messages`, plain and streamed, with prompt
caching and extended thinking (sandbox.prompt_cache)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.dialogue import IMAGE_PROMPT_TOKENS, Prompt, Reply, ToolSpec, reply_to
from sandbox.images import ImageRef, image_from_base64
from sandbox.prompt_cache import (
    CacheUse,
    PrefixReader,
    check_thinking_block,
    signature,
    thinking_budget,
    thinking_text,
    usage_fields,
)
from sandbox.providers.common import bearer_token, fragments, read_and_log, sse_event
from sandbox.state import Fault, SandboxState
from sandbox.synth import estimate_tokens, new_id, split_text
from sandbox.transport import EventStreamResponse, InvalidBody, first_byte_delay, json_response

PROVIDER = "anthropic"
_TOOL_ARGUMENT_FRAGMENTS = 3

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
}


class BadRequest(Exception):
    pass


def routes(state: SandboxState) -> list[Route]:
    async def create_message(request: Request) -> Response:
        return await _create_message(request, state)

    return [Route("/anthropic/v1/messages", create_message, methods=["POST"])]


def error_response(
    status: int,
    message: str,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    request_id = new_id("req_")
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    kind = error_type or _ERROR_TYPES.get(status, fallback)
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return json_response(body, status, {"request-id": request_id, **(headers or {})})


async def _create_message(request: Request, state: SandboxState) -> Response:
    body = await read_and_log(request, state, PROVIDER)
    await first_byte_delay(state.settings)
    # The API takes `x-api-key`; anthropic-sdk-python 2.x sends the same key as Bearer.
    if not (request.headers.get("x-api-key") or bearer_token(request)):
        return error_response(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return error_response(400, "anthropic-version: header is required")
    if isinstance(body, InvalidBody):
        return error_response(400, str(body))
    streaming = body.get("stream") is True
    fault = state.faults.take(PROVIDER, streaming=streaming)
    if fault is not None and fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault is not None and fault.fails_up_front:
        return _fault_response(fault)
    try:
        model, prompt, forced_tool = _parse(body)
        budget = thinking_budget(body.get("thinking"), body["max_tokens"])
        breakpoints = _cache_prefixes(body)
        _check_history(body["messages"], thinking=budget is not None)
    except (BadRequest, ValueError) as exc:
        return error_response(400, str(exc))
    reply = reply_to(prompt, state.settings.answer_tokens, state.settings.max_tokens_overrun)
    content = _content_blocks(reply, lead_in=not forced_tool)
    if reply.tool_calls and content[0]["type"] == "text":
        reply.completion_tokens += estimate_tokens(len(content[0]["text"]))
    if budget is not None:
        thought = thinking_text(prompt.last_user_text)
        block = {"type": "thinking", "thinking": thought, "signature": signature(thought)}
        content.insert(0, block)
        reply.completion_tokens += estimate_tokens(len(thought))
    cache = state.prompt_cache.use(breakpoints, reply.prompt_tokens)
    message_id = new_id("msg_")
    request_id = new_id("req_")
    headers = {"request-id": request_id}
    if streaming:
        events = _stream_events(
            message_id, model, reply, content, state.settings.stream_chunks, cache
        )
        return EventStreamResponse(
            events,
            state.settings,
            headers=headers,
            cut_after=fault.after_chunks if fault is not None else None,
            cut_event=_overloaded_event(request_id) if fault is not None else None,
        )
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": usage_fields(reply.prompt_tokens, reply.completion_tokens, cache),
    }
    return json_response(message, headers=headers)


def _fault_response(fault: Fault) -> Response:
    kind = _ERROR_TYPES.get(fault.status, "api_error" if fault.status >= 500 else None)
    message = fault.message or _ERROR_MESSAGES.get(kind or "", f"sandbox fault {fault.status}")
    headers = {"retry-after": str(fault.retry_after)} if fault.status == 429 else None
    return error_response(fault.status, message, kind, headers)


def _overloaded_event(request_id: str) -> bytes:
    payload = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": request_id,
    }
    return sse_event("error", payload)


def _parse(body: dict[str, Any]) -> tuple[str, Prompt, bool]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise BadRequest("max_tokens: Field required")
    if max_tokens < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required")

    prompt = Prompt(max_tokens=max_tokens)
    prompt.add_text(_system_text(body.get("system")))
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise BadRequest("messages: each message needs role 'user' or 'assistant'")
        text, tool_results = _read_blocks(message.get("content"), prompt)
        if message["role"] == "user":
            prompt.tool_result = "; ".join(tool_results) if tool_results else None
            if text or not tool_results:
                prompt.last_user_text = text
        else:
            prompt.tool_result = None

    choice = body.get("tool_choice") or {"type": "auto"}
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice: Input should be an object")
    prompt.tools = _allowed_tools(body.get("tools"), choice, prompt)
    prompt.allow_parallel_tools = choice.get("disable_parallel_tool_use") is not True

    output_config = body.get("output_config")
    output_format = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        schema = output_format.get("schema")
        prompt.json_schema = schema if isinstance(schema, dict) else {}
    elif _asks_for_json(_system_text(body.get("system"))):
        # Claude has no JSON-object switch; it follows a system instruction to answer in JSON.
        prompt.json_object = True
    forced_tool = choice.get("type") in ("any", "tool")
    return model, prompt, forced_tool


def _text_chars(block: dict[str, Any]) -> int:
    """The characters of a block that `_parse` counts into the prompt."""
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")))
    if kind == "tool_use":
        return len(orjson.dumps(block.get("input", {})))
    if kind == "tool_result":
        inner = block.get("content") or ""
        if isinstance(inner, str):
            return len(inner)
        return sum(_text_chars(item) for item in inner if isinstance(item, dict))
    if kind == "image":
        return 4 * IMAGE_PROMPT_TOKENS
    return 0


def _cache_prefixes(body: dict[str, Any]) -> list[Any]:
    """The request's cacheable prefixes, in the API's order: tools, system, messages."""
    reader = PrefixReader()
    for index, tool in enumerate(body.get("tools") or ()):
        if isinstance(tool, dict):
            chars = len(str(tool.get("name", ""))) + len(str(tool.get("description", "")))
            reader.add(tool, chars, f"tools.{index}")
    system = body.get("system")
    if isinstance(system, str):
        reader.add(system, len(system), "system")
    elif isinstance(system, list):
        for index, block in enumerate(system):
            if isinstance(block, dict):
                reader.add(block, len(str(block.get("text", ""))), f"system.{index}")
    for number, message in enumerate(body["messages"]):
        content = message.get("content")
        if isinstance(content, str):
            reader.add(content, len(content), f"messages.{number}.content")
            continue
        for index, block in enumerate(content or ()):
            if isinstance(block, dict):
                reader.add(block, _text_chars(block), f"messages.{number}.content.{index}")
    return reader.breakpoints


def _check_history(messages: list[Any], *, thinking: bool) -> None:
    """Thinking blocks sent back must be the API's own, unaltered; with thinking on, a final
    assistant turn that calls a tool must start with its thinking block."""
    for number, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for index, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "thinking":
                check_thinking_block(block, f"messages.{number}.content.{index}")
    assistants = [m for m in messages if m.get("role") == "assistant"]
    last = assistants[-1].get("content") if assistants else None
    if not thinking or not isinstance(last, list) or not last:
        return
    calls_tool = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in last)
    first = last[0].get("type") if isinstance(last[0], dict) else None
    if calls_tool and first not in ("thinking", "redacted_thinking"):
        raise BadRequest(
            f"messages.{messages.index(assistants[-1])}.content.0.type: Expected `thinking` or "
            f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
            "`assistant` message must start with a thinking block."
        )


def _asks_for_json(system: str) -> bool:
    lowered = system.lower()
    return "json object" in lowered and ("only" in lowered or "nothing else" in lowered)


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(block.get("text", "")) for block in system if isinstance(block, dict))
    return ""


def _read_blocks(content: Any, prompt: Prompt) -> tuple[str, list[str]]:
    """Text of a message and the contents of its tool_result blocks."""
    if isinstance(content, str):
        prompt.add_text(content)
        return content, []
    if not isinstance(content, list):
        raise BadRequest("messages: content must be a string or a list of blocks")
    texts: list[str] = []
    tool_results: list[str] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
            prompt.add_text(texts[-1])
        elif kind == "image":
            prompt.images.append(_image(block.get("source")))
        elif kind == "tool_use":
            prompt.add_text(orjson.dumps(block.get("input", {})).decode())
        elif kind == "tool_result":
            result, _ = _read_blocks(block.get("content") or "", prompt)
            tool_results.append(result)
    return "\n".join(texts), tool_results


def _image(source: Any) -> ImageRef:
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return image_from_base64(source["data"])
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return ImageRef(url=source["url"])
    raise BadRequest("image.source: expected a base64 or url source")


def _allowed_tools(tools: Any, choice: dict[str, Any], prompt: Prompt) -> list[ToolSpec]:
    offered: list[ToolSpec] = []
    for tool in tools or ():
        # Server tools (web search, code execution...) have no input_schema; the model
        # never calls them through tool_use here.
        if not isinstance(tool, dict) or "input_schema" not in tool:
            continue
        if not isinstance(tool.get("name"), str):
            raise BadRequest("tools.name: Field required")
        offered.append(ToolSpec(tool["name"], tool.get("input_schema") or {}))
        prompt.add_text(tool["name"] + str(tool.get("description", "")))
    kind = choice.get("type")
    if kind == "none" or not offered:
        return []
    if kind == "tool":
        named = [tool for tool in offered if tool.name == choice.get("name")]
        if not named:
            raise BadRequest(f"Tool '{choice.get('name')}' not found in the provided tools")
        return named
    if kind not in ("auto", "any"):
        raise BadRequest(f"tool_choice.type: unexpected value {kind!r}")
    return offered


def _content_blocks(reply: Reply, *, lead_in: bool) -> list[dict[str, Any]]:
    if not reply.tool_calls:
        return [{"type": "text", "text": reply.text}]
    # Claude usually says what it is about to do before calling a tool, unless forced.
    blocks: list[dict[str, Any]] = []
    if lead_in:
        names = " and ".join(call.name for call in reply.tool_calls)
        blocks.append({"type": "text", "text": f"I'll use {names} for this."})
    blocks.extend(
        {"type": "tool_use", "id": f"toolu_{call.key}", "name": call.name, "input": call.arguments}
        for call in reply.tool_calls
    )
    return blocks


def _stop_reason(reply: Reply) -> str:
    if reply.tool_calls:
        return "tool_use"
    return "max_tokens" if reply.hit_max_tokens else "end_turn"


def _stream_events(
    message_id: str,
    model: str,
    reply: Reply,
    content: list[dict[str, Any]],
    text_chunks: int,
    cache: CacheUse,
) -> list[bytes]:
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_fields(reply.prompt_tokens, 1, cache),
    }
    events = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(content):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": piece}
                for piece in split_text(block["text"], text_chunks)
            ]
        elif block["type"] == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": piece}
                for piece in split_text(block["thinking"], text_chunks)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {**block, "input": {}}
            arguments = orjson.dumps(block["input"]).decode()
            # The API's first input_json_delta is often empty; clients must cope.
            pieces = ["", *fragments(arguments, _TOOL_ARGUMENT_FRAGMENTS)]
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        events.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        for delta in deltas:
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(sse_event("content_block_delta", payload))
        events.append(
            sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    events.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": reply.completion_tokens},
            },
        )
    )
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return events
