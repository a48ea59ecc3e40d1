"""OpenAI's Responses API: `POST /openai/v1/responses`, plain and streamed.

The request is read into the same `Prompt` the chat simulator builds, so both APIs give
the same answer (text, JSON or tool calls) and the same token counts for the same
conversation; only the wire format differs. The whole answer is known up front, so the
stream is derived from the finished `response` object: each output item is opened,
filled by deltas and closed, in output order, between `response.created` /
`response.in_progress` and `response.completed` (`response.incomplete` when
`max_output_tokens` cut the text). Every event is numbered by `sequence_number`.

Auth, latency, faults and the request log are the chat simulator's (provider `openai`);
a mid-stream fault drops the connection as OpenAI's chat stream does.
`previous_response_id` is echoed but not followed: the sandbox keeps no responses, so a
follow-up call must carry the turns it wants answered (a `function_call_output` does).
As on OpenAI, a reasoning model's reasoning item carries `encrypted_content` when
`include` asks for `reasoning.encrypted_content`, and with `store: false` a reasoning
input item without it is a 404 (nothing was kept to look it up by): what a gateway that
keeps conversations itself must spell out.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.dialogue import Prompt, Reply, ToolSpec, reply_to
from sandbox.images import ImageRef, image_from_url
from sandbox.providers.common import fragments, sse_event
from sandbox.providers.openai_api import (
    OPENAI,
    BadRequest,
    Flavor,
    _content_text,
    _error,
    _serve,
    apply_tool_choice,
    read_content,
    trailing_tool_results,
)
from sandbox.state import Fault, SandboxState
from sandbox.synth import new_id, split_text
from sandbox.transport import EventStreamResponse, json_response

Item = dict[str, Any]

PREFIX = "/openai/v1"
_ROLES = ("user", "assistant", "system", "developer")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Hidden reasoning a reasoning model spends per effort: a fixed, visible-in-usage number,
# so tests can see that `reasoning_tokens` count into `output_tokens`.
_REASONING_TOKENS = {"minimal": 8, "low": 32, "medium": 96, "high": 256, "xhigh": 512}
# OpenAI refuses smaller `max_output_tokens` with integer_below_min_value.
_MIN_OUTPUT_TOKENS = 16
_ARGUMENT_FRAGMENTS = 3


def routes(state: SandboxState) -> list[Route]:
    async def create(request: Request) -> Response:
        return await _serve(request, state, OPENAI, _create_response)

    return [Route(f"{PREFIX}/responses", create, methods=["POST"])]


def _create_response(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing("model")
    prompt = _prompt_from(body)
    unkept = _unkept_reasoning(body)
    if unkept is not None:
        return _error(
            flavor,
            404,
            f"Item with id '{unkept}' not found. Items are not persisted when `store` is set "
            "to false. Try again with `store` set to true, or remove this item from your input.",
            param="input",
        )
    effort = _reasoning_effort(body)
    reasoning_tokens = _REASONING_TOKENS.get(effort or "none", 0)
    if prompt.max_tokens is not None:
        # Reasoning spends the same budget as the visible answer, as on OpenAI; it leaves
        # at least a token of text, so `output_tokens` stays within `max_output_tokens`.
        reasoning_tokens = min(reasoning_tokens, prompt.max_tokens - 1)
        prompt.max_tokens -= reasoning_tokens
    reply = reply_to(prompt, state.settings.answer_tokens, state.settings.max_tokens_overrun)
    response = _response_object(body, model, reply, reasoning_tokens)
    headers = {"x-request-id": new_id("req_")}
    if body.get("stream") is not True:
        return json_response(response, headers=headers)
    return EventStreamResponse(
        _stream_events(response, state.settings.stream_chunks),
        state.settings,
        headers=headers,
        cut_after=fault.after_chunks if fault is not None else None,
        # The closing event follows the last item's `done` at once.
        unpaced_tail=1,
    )


def _unkept_reasoning(body: dict[str, Any]) -> str | None:
    """The id of a reasoning input item OpenAI would have to look up although `store` is
    false (it carries no `encrypted_content`), if there is one."""
    items = body.get("input")
    if body.get("store") is not False or not isinstance(items, list):
        return None
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("type") == "reasoning"
            and not isinstance(item.get("encrypted_content"), str)
        ):
            return str(item.get("id"))
    return None


def _missing(param: str) -> BadRequest:
    return BadRequest(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


# --- request ------------------------------------------------------------------------


def _prompt_from(body: dict[str, Any]) -> Prompt:
    prompt = Prompt()
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest(
            "Invalid type for 'instructions': expected a string.", "instructions", "invalid_type"
        )
    prompt.add_text(instructions or "")
    raw_input = body.get("input")
    if raw_input is None:
        raise _missing("input")
    if isinstance(raw_input, str):
        prompt.add_text(raw_input)
        prompt.last_user_text = raw_input
    elif isinstance(raw_input, list) and raw_input:
        _read_items(raw_input, prompt)
    else:
        raise BadRequest(
            "Invalid value for 'input': expected a string or a non-empty array of input items.",
            "input",
            "invalid_value",
        )
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None:
        prompt.max_tokens = _checked_max_output_tokens(max_output_tokens)
    prompt.allow_parallel_tools = body.get("parallel_tool_calls") is not False
    prompt.tools = apply_tool_choice(
        _function_tools(body, prompt), body.get("tool_choice", "auto"), _choice_names
    )
    _read_text_format(body, prompt)
    return prompt


def _read_items(items: list[Any], prompt: Prompt) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(
                f"Invalid type for 'input[{index}]': expected an object.",
                f"input[{index}]",
                "invalid_type",
            )
        # A bare `{role, content}` is an easy input message; `type` may be left out.
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise BadRequest(
                    f"Invalid value for 'input[{index}].role': expected one of {list(_ROLES)}.",
                    f"input[{index}].role",
                    "invalid_value",
                )
            text = _message_text(item.get("content"), prompt, f"input[{index}].content")
            if role == "user":
                prompt.last_user_text = text
        elif kind == "function_call":
            prompt.add_text(str(item.get("name", "")) + str(item.get("arguments", "")))
        elif kind == "function_call_output":
            prompt.add_text(_content_text(item.get("output")))
        # Other item types (reasoning, item_reference, hosted tool calls) carry nothing
        # the simulated model reads.
    prompt.tool_result = trailing_tool_results(items, _is_function_output, "output")


def _message_text(content: Any, prompt: Prompt, param: str) -> str:
    """Text of an input message; images in it are added to the prompt."""
    if not isinstance(content, str | list):
        raise BadRequest(
            f"Invalid type for '{param}': expected a string or an array of content parts.",
            param,
            "invalid_type",
        )
    # `output_text` is an earlier assistant turn replayed as input.
    return read_content(
        content, prompt, ("input_text", "output_text"), lambda part: _input_image(part, param)
    )


def _input_image(part: dict[str, Any], param: str) -> ImageRef | None:
    if part.get("type") != "input_image":
        return None
    url = part.get("image_url")
    if isinstance(url, str) and url:
        return image_from_url(url)
    file_id = part.get("file_id")
    if isinstance(file_id, str) and file_id:
        # An uploaded file: the sandbox has no Files API, so it names the id.
        return ImageRef(url=file_id)
    raise BadRequest(
        f"Invalid input image in '{param}': provide 'image_url' or 'file_id'.",
        param,
        "invalid_value",
    )


def _is_function_output(item: dict[str, Any]) -> bool:
    return item.get("type") == "function_call_output"


def _function_tools(body: dict[str, Any], prompt: Prompt) -> list[ToolSpec]:
    """Function tools the model could call; hosted tools (web search…) are echoed only."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _missing(f"tools[{index}].name")
        parameters = tool.get("parameters")
        specs.append(ToolSpec(name, parameters if isinstance(parameters, dict) else {}))
        prompt.add_text(name + str(tool.get("description") or ""))
    return specs


def _choice_names(choice: dict[str, Any]) -> set[str]:
    """Names a Responses `tool_choice` object allows: `name` sits on the object itself."""
    if choice.get("type") == "function":
        return {str(choice.get("name"))}
    if choice.get("type") == "allowed_tools":
        return {
            str(entry.get("name"))
            for entry in choice.get("tools") or ()
            if isinstance(entry, dict) and entry.get("type") == "function"
        }
    raise BadRequest(
        f"Unsupported tool_choice type {choice.get('type')!r} in the sandbox.", "tool_choice"
    )


def _checked_max_output_tokens(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(
            "Invalid type for 'max_output_tokens': expected an integer.",
            "max_output_tokens",
            "invalid_type",
        )
    if value < _MIN_OUTPUT_TOKENS:
        raise BadRequest(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{_MIN_OUTPUT_TOKENS}, but got {value} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    return value


def _read_text_format(body: dict[str, Any], prompt: Prompt) -> None:
    text_format = _object(body, "text").get("format")
    if not isinstance(text_format, dict):
        return
    kind = text_format.get("type")
    if kind == "json_object":
        prompt.json_object = True
    elif kind == "json_schema":
        if not text_format.get("name"):
            raise _missing("text.format.name")
        schema = text_format.get("schema")
        if not isinstance(schema, dict):
            raise _missing("text.format.schema")
        prompt.json_schema = schema
    elif kind != "text":
        raise BadRequest(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
            "text.format.type",
            "invalid_value",
        )


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    effort = _object(body, "reasoning").get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise BadRequest(
            f"Invalid value: '{effort}'. Supported values are: {', '.join(_EFFORTS)}.",
            "reasoning.effort",
            "invalid_value",
        )
    return effort if isinstance(effort, str) else None


# --- response -----------------------------------------------------------------------


def _response_object(body: dict[str, Any], model: str, reply: Reply, reasoning_tokens: int) -> Item:
    """The finished response, echoing the request's settings with OpenAI's defaults."""
    output: list[Item] = []
    if reasoning_tokens:
        reasoning_item: Item = {"type": "reasoning", "id": new_id("rs_"), "summary": []}
        if "reasoning.encrypted_content" in (body.get("include") or ()):
            reasoning_item["encrypted_content"] = "gAAAAA" + new_id("")
        output.append(reasoning_item)
    if reply.tool_calls:
        output.extend(
            {
                "type": "function_call",
                "id": new_id("fc_"),
                "call_id": f"call_{call.key}",
                "name": call.name,
                "arguments": call.arguments_json,
                "status": "completed",
            }
            for call in reply.tool_calls
        )
    else:
        output.append(
            {
                "type": "message",
                "id": new_id("msg_"),
                "status": "incomplete" if reply.hit_max_tokens else "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
                ],
            }
        )
    output_tokens = reply.completion_tokens + reasoning_tokens
    now = int(time.time())
    reasoning = _object(body, "reasoning")
    text = _object(body, "text")
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": now,
        "status": "incomplete" if reply.hit_max_tokens else "completed",
        "background": False,
        "completed_at": None if reply.hit_max_tokens else now,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if reply.hit_max_tokens else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary"),
        },
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity", "medium"),
        },
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_echoed_tool(tool) for tool in body.get("tools") or ()],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": reply.prompt_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _echoed_tool(tool: Any) -> Any:
    """A function tool as OpenAI echoes it: `description` null and `strict` true by default."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    return {"description": None, "strict": True, **tool}


# --- stream -------------------------------------------------------------------------


class _Events:
    """Numbers the events of one stream as it encodes them."""

    def __init__(self) -> None:
        self.encoded: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        payload = {"type": kind, "sequence_number": len(self.encoded), **fields}
        self.encoded.append(sse_event(kind, payload))


def _stream_events(response: Item, text_chunks: int) -> list[bytes]:
    events = _Events()
    opening = {
        **response,
        "status": "in_progress",
        "completed_at": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
    events.add("response.created", response=opening)
    events.add("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            _stream_message(events, index, item, text_chunks)
        elif item["type"] == "function_call":
            _stream_function_call(events, index, item)
        else:
            events.add("response.output_item.added", output_index=index, item=item)
            events.add("response.output_item.done", output_index=index, item=item)
    closing = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.add(closing, response=response)
    return events.encoded


def _stream_message(events: _Events, index: int, item: Item, text_chunks: int) -> None:
    part = item["content"][0]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    events.add(
        "response.output_item.added",
        output_index=index,
        item={**item, "status": "in_progress", "content": []},
    )
    events.add("response.content_part.added", **where, part={**part, "text": ""})
    for piece in split_text(part["text"], text_chunks):
        events.add("response.output_text.delta", **where, delta=piece, logprobs=[])
    events.add("response.output_text.done", **where, text=part["text"], logprobs=[])
    events.add("response.content_part.done", **where, part=part)
    events.add("response.output_item.done", output_index=index, item=item)


def _stream_function_call(events: _Events, index: int, item: Item) -> None:
    where = {"item_id": item["id"], "output_index": index}
    events.add(
        "response.output_item.added",
        output_index=index,
        item={**item, "arguments": "", "status": "in_progress"},
    )
    for piece in fragments(item["arguments"], _ARGUMENT_FRAGMENTS):
        events.add("response.function_call_arguments.delta", **where, delta=piece)
    events.add("response.function_call_arguments.done", **where, arguments=item["arguments"])
    events.add("response.output_item.done", output_index=index, item=item)
