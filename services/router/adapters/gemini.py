"""OpenAI chat completions ⇄ Gemini generateContent / streamGenerateContent."""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aig_common.errors import APIError
from router.adapters.base import (
    ChunkFactory,
    TokenUsage,
    UpstreamError,
    assistant_choice,
    body_excerpt,
    completion_object,
    error_object,
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
    ToolCall,
    ToolChoice,
    UserMessage,
    append_turn,
    image_urls,
    no_turns,
    read_messages,
    read_response_format,
    read_tool_choice,
    read_tools,
)

# Gemini 3 rejects a replayed function call without the thoughtSignature it was sent with,
# and OpenAI history has nowhere to keep one but the tool call id. We append it after this
# separator, which never occurs in base64 nor in OpenAI's own `call_…` ids.
SIGNATURE_SEPARATOR = "~"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

TOOL_CONFIG_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# Chat's `reasoning_effort` as a Gemini 2.5 thinking budget (tokens of thought; thoughts
# are output, bounded by maxOutputTokens like the answer, so the reservation still holds).
# 512 is the least every 2.5 model takes (Flash-Lite's floor). The thought summary comes
# back as chat's `reasoning_content` (DeepSeek's and OpenRouter's field), which
# /v1/messages turns into thinking blocks.
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

RETRY_DELAY = re.compile(r"^(?P<seconds>\d+(?:\.\d+)?)s$")


# --- request -----------------------------------------------------------------------------


def image_urls_to_fetch(body: dict[str, Any]) -> list[str]:
    """The http(s) image URLs in user messages, each once, in order of appearance."""
    return image_urls(body.get("messages"))


def generate_path(upstream_model: str, *, stream: bool) -> str:
    model = upstream_model.removeprefix("models/")
    if stream:
        return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{model}:generateContent"


def build_generate_request(
    body: dict[str, Any],
    *,
    fetched_images: Mapping[str, tuple[str, bytes]],
    max_output_tokens: int | None,
) -> dict[str, Any]:
    if body.get("logprobs"):
        raise APIError(400, "This model does not return logprobs.", param="logprobs")
    system, contents = _translate_messages(body.get("messages"), fetched_images)
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}

    tools = body.get("tools")
    if tools:
        request["tools"] = [
            {"functionDeclarations": [_function_declaration(t) for t in read_tools(tools)]}
        ]
        tool_config = _tool_config(read_tool_choice(body.get("tool_choice")))
        if tool_config is not None:
            request["toolConfig"] = {"functionCallingConfig": tool_config}

    config = _generation_config(body, max_output_tokens)
    if config:
        request["generationConfig"] = config
    return request


def _generation_config(body: dict[str, Any], max_output_tokens: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_field, gemini_field in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("n", "candidateCount"),
    ):
        if body.get(openai_field) is not None:
            config[gemini_field] = body[openai_field]

    requested = body.get("max_completion_tokens")
    if requested is None:
        requested = body.get("max_tokens")
    if requested is not None:
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise APIError(
                400, "max_completion_tokens must be a positive integer.", param="max_tokens"
            )
        config["maxOutputTokens"] = (
            min(requested, max_output_tokens) if max_output_tokens else requested
        )
    elif max_output_tokens:
        config["maxOutputTokens"] = max_output_tokens

    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = list(stop)

    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        config["thinkingConfig"] = {
            "thinkingBudget": THINKING_BUDGETS[effort],
            "includeThoughts": True,
        }

    response_format = read_response_format(body.get("response_format"))
    if response_format is not None:
        config["responseMimeType"] = "application/json"
    if isinstance(response_format, JsonSchemaFormat):
        config["responseJsonSchema"] = response_format.schema
    return config


def _function_declaration(tool: FunctionTool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        declaration["description"] = tool.description
    if tool.parameters is not None:
        # parametersJsonSchema takes JSON Schema as is; `parameters` is an OpenAPI subset
        # that rejects common keywords such as additionalProperties.
        declaration["parametersJsonSchema"] = tool.parameters
    return declaration


def _tool_config(tool_choice: ToolChoice) -> dict[str, Any] | None:
    if tool_choice is None:
        return None
    if isinstance(tool_choice, NamedTool):
        return {"mode": "ANY", "allowedFunctionNames": [tool_choice.name]}
    return {"mode": TOOL_CONFIG_MODES[tool_choice]}


def _translate_messages(
    messages: Any, fetched_images: Mapping[str, tuple[str, bytes]]
) -> tuple[list[str], list[dict[str, Any]]]:
    conversation = read_messages(messages)
    contents: list[dict[str, Any]] = []

    def append(role: str, parts: list[dict[str, Any]]) -> None:
        append_turn(contents, role, parts, "parts")

    for message in conversation.messages:
        if isinstance(message, UserMessage):
            append("user", [_user_part(part, fetched_images) for part in message.parts])
        elif isinstance(message, AssistantMessage):
            parts: list[dict[str, Any]] = [{"text": message.text}] if message.text else []
            parts.extend(_function_call_part(call) for call in message.tool_calls)
            append("model", parts)
        else:
            response = {"name": message.name, "response": _function_response(message.text)}
            append("user", [{"functionResponse": response}])
    if not contents:
        raise no_turns()
    return conversation.system, contents


def _user_part(
    part: TextPart | ImagePart, fetched_images: Mapping[str, tuple[str, bytes]]
) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url is not None:
        fetched = fetched_images.get(part.url)
        if fetched is None:
            raise APIError(400, f"Could not download the image at {part.url}.", param=part.param)
        mime_type, data = fetched
        return {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode()}}
    if not str(part.media_type).startswith("image/"):
        raise APIError(400, f"{part.media_type!r} is not an image type.", param=part.param)
    return {"inlineData": {"mimeType": part.media_type, "data": part.data}}


def _function_call_part(call: ToolCall) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
    signature = thought_signature_of(call.id)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(text: str) -> dict[str, Any]:
    # `response` must be a JSON object; a tool that already answered with one keeps its shape.
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"result": text}


def new_tool_call_id(thought_signature: str | None = None) -> str:
    call_id = f"call_{secrets.token_hex(12)}"
    if thought_signature:
        call_id += SIGNATURE_SEPARATOR + thought_signature
    return call_id


def thought_signature_of(tool_call_id: str) -> str | None:
    if not tool_call_id.startswith("call_"):
        return None
    _, separator, signature = tool_call_id.partition(SIGNATURE_SEPARATOR)
    return signature if separator and signature else None


# --- response ----------------------------------------------------------------------------


def usage_from_gemini(metadata: Mapping[str, Any] | None) -> TokenUsage:
    metadata = metadata or {}
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    return TokenUsage(
        prompt_tokens=int(metadata.get("promptTokenCount") or 0),
        completion_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_prompt_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def finish_reason_for(gemini_reason: str | None, *, called_functions: bool) -> str:
    if gemini_reason == "STOP" and called_functions:
        return "tool_calls"
    return FINISH_REASONS.get(gemini_reason or "", "stop")


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    return {
        "id": new_tool_call_id(part.get("thoughtSignature")),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": json.dumps(call.get("args") or {})},
    }


def _visible_parts(candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
    # `thought: true` parts are the model's reasoning summary, not the answer.
    parts = (candidate.get("content") or {}).get("parts") or []
    return [part for part in parts if isinstance(part, dict) and not part.get("thought")]


def _thoughts(candidate: Mapping[str, Any]) -> str:
    """The reasoning summary (`thought: true` parts; only sent with includeThoughts)."""
    parts = (candidate.get("content") or {}).get("parts") or []
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("thought") and isinstance(part.get("text"), str)
    )


def completion_from_response(
    payload: dict[str, Any], *, public_model: str, completion_id: str, created: int
) -> tuple[dict[str, Any], TokenUsage]:
    usage = usage_from_gemini(payload.get("usageMetadata"))
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(payload.get("candidates") or []):
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for part in _visible_parts(candidate):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                tool_calls.append(_tool_call(part))
        finish_reason = finish_reason_for(
            candidate.get("finishReason"), called_functions=bool(tool_calls)
        )
        choice = assistant_choice(
            index=candidate.get("index", position),
            text="".join(texts),
            tool_calls=tool_calls,
            finish_reason=finish_reason,
        )
        thoughts = _thoughts(candidate)
        if thoughts:
            choice["message"]["reasoning_content"] = thoughts
        choices.append(choice)
    if not choices:
        # No candidates: the prompt itself was blocked (promptFeedback.blockReason).
        choices.append(
            assistant_choice(index=0, text="", tool_calls=[], finish_reason="content_filter")
        )
    completion = completion_object(
        completion_id=completion_id,
        created=created,
        model=public_model,
        choices=choices,
        usage=usage,
    )
    return completion, usage


@dataclass(slots=True)
class _CandidateState:
    tool_calls: int = 0
    finished: bool = False


class GenerateStreamTranslator:
    """Translates streamGenerateContent responses into OpenAI chunks.

    Gemini sends no end marker: the router calls `finish()` when the stream closes.
    """

    def __init__(
        self, *, public_model: str, completion_id: str, created: int, include_usage: bool
    ) -> None:
        self._chunks = ChunkFactory(
            completion_id=completion_id,
            created=created,
            model=public_model,
            include_usage=include_usage,
        )
        self._candidates: dict[int, _CandidateState] = {}
        self.usage: TokenUsage | None = None
        self.done = False

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if data.get("error"):
            raise error_from_stream_payload(data)
        if self.done:
            return []
        if data.get("usageMetadata"):
            # Each chunk's usage is cumulative; the last one is the total.
            self.usage = usage_from_gemini(data["usageMetadata"])
        out: list[dict[str, Any]] = []
        candidates = data.get("candidates") or []
        for position, candidate in enumerate(candidates):
            self._candidate(candidate.get("index", position), candidate, out)
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            state = self._start(0, out)
            self._finish(0, state, "content_filter", out)
        return out

    @property
    def saw_finish_reason(self) -> bool:
        """Whether Gemini reported how the answer ended; a stream closed without one broke."""
        return any(state.finished for state in self._candidates.values())

    def finish(self) -> list[dict[str, Any]]:
        if self.done:
            return []
        self.done = True
        out: list[dict[str, Any]] = []
        if not self._candidates:
            self._start(0, out)
        for index, state in self._candidates.items():
            self._finish(index, state, "stop", out)
        if self._chunks.include_usage:
            out.append(self._chunks.usage_chunk(self.usage or TokenUsage()))
        return out

    def _start(self, index: int, out: list[dict[str, Any]]) -> _CandidateState:
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _CandidateState()
            out.append(self._chunks.chunk({"role": "assistant", "content": ""}, index=index))
        return state

    def _finish(
        self, index: int, state: _CandidateState, finish_reason: str, out: list[dict[str, Any]]
    ) -> None:
        if not state.finished:
            state.finished = True
            out.append(self._chunks.chunk({}, index=index, finish_reason=finish_reason))

    def _candidate(self, index: int, candidate: dict[str, Any], out: list[dict[str, Any]]) -> None:
        state = self._start(index, out)
        if state.finished:
            return
        thoughts = _thoughts(candidate)
        if thoughts:
            out.append(self._chunks.chunk({"reasoning_content": thoughts}, index=index))
        for part in _visible_parts(candidate):
            if isinstance(part.get("text"), str) and part["text"]:
                out.append(self._chunks.chunk({"content": part["text"]}, index=index))
            elif isinstance(part.get("functionCall"), dict):
                # Gemini sends each call whole, so its arguments go out as one fragment.
                call = {"index": state.tool_calls, **_tool_call(part)}
                state.tool_calls += 1
                out.append(self._chunks.chunk({"tool_calls": [call]}, index=index))
        if candidate.get("finishReason"):
            reason = finish_reason_for(
                candidate["finishReason"], called_functions=state.tool_calls > 0
            )
            self._finish(index, state, reason, out)


# --- errors ------------------------------------------------------------------------------


def _has_reason(error: Mapping[str, Any], reason: str) -> bool:
    details = error.get("details")
    return isinstance(details, list) and any(
        isinstance(detail, dict) and detail.get("reason") == reason for detail in details
    )


def _retry_after_from_details(error: Mapping[str, Any]) -> str | None:
    """Gemini states its back-off in a RetryInfo detail ("37s"), not in a header."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return str(math.ceil(float(match["seconds"])))
    return None


def _error(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> UpstreamError:
    client_status = None
    if _has_reason(error, "API_KEY_INVALID"):
        client_status = 401
    retry_headers = dict(headers)
    retry_after = _retry_after_from_details(error)
    if retry_after is not None and not any(k.lower() == "retry-after" for k in headers):
        retry_headers["retry-after"] = retry_after
    return make_upstream_error(
        status,
        str(error.get("message") or ""),
        status=client_status,
        code=error.get("status") if isinstance(error.get("status"), str) else None,
        headers=retry_headers,
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    error = error_object(parse_json_body(body))
    if error is None:
        return make_upstream_error(status, body_excerpt(body), headers=headers)
    return _error(status, error, headers)


def error_from_stream_payload(payload: Any) -> UpstreamError:
    """An error that arrived inside a 200 stream (as `data:` or as raw JSON)."""
    error = error_object(payload) or {"message": "upstream stream failed"}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return _error(status, error, {})
