"""Gemini API (generativelanguage): generateContent, streamGenerateContent, embeddings.

Served under `/google/{version}/models/{model}:{method}`; the version segment may be
`v1beta` (what most clients use) or `v1` (newer google-genai releases' default).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.dialogue import Prompt, Reply, ToolSpec, reply_to
from sandbox.images import ImageRef, image_from_base64
from sandbox.providers.common import read_and_log
from sandbox.state import Fault, SandboxState
from sandbox.synth import embedding, estimate_tokens, new_id, short_hash, split_text
from sandbox.transport import EventStreamResponse, InvalidBody, first_byte_delay, json_response

PROVIDER = "google"
_VERSIONS = frozenset({"v1", "v1beta", "v1alpha"})

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_EMBEDDING_DIMENSIONS = {
    "gemini-embedding-001": 3072,
    "gemini-embedding-exp-03-07": 3072,
    "text-embedding-004": 768,
    "embedding-001": 768,
}
_DEFAULT_EMBEDDING_DIMENSIONS = 768


class BadRequest(Exception):
    pass


def routes(state: SandboxState) -> list[Route]:
    async def model_method(request: Request) -> Response:
        return await _dispatch(request, state)

    return [Route("/google/{version}/models/{target}", model_method, methods=["POST"])]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
        }
    }
    return json_response(body, status, headers)


async def _dispatch(request: Request, state: SandboxState) -> Response:
    body = await read_and_log(request, state, PROVIDER)
    await first_byte_delay(state.settings)
    if not (request.headers.get("x-goog-api-key") or request.query_params.get("key")):
        return error_response(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
        )
    model, _sep, method = request.path_params["target"].partition(":")
    if request.path_params["version"] not in _VERSIONS or not method:
        return error_response(404, f"Method not found: {request.url.path}")
    if isinstance(body, InvalidBody):
        return error_response(400, f"Invalid JSON payload received. {body}")
    streaming = method == "streamGenerateContent"
    fault = state.faults.take(PROVIDER, streaming=streaming)
    if fault is not None and fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault is not None and fault.fails_up_front:
        return _fault_response(fault)
    try:
        if method == "generateContent":
            return _generate(model, body, state)
        if streaming:
            return _stream(model, body, state, request.query_params.get("alt"), fault)
        if method == "embedContent":
            return json_response({"embedding": _embed_one(model, body)})
        if method == "batchEmbedContents":
            return _batch_embed(model, body)
    except BadRequest as exc:
        return error_response(400, str(exc))
    return error_response(404, f"Method not found: {method}")


def _fault_response(fault: Fault) -> Response:
    headers = {"retry-after": str(fault.retry_after)} if fault.status == 429 else None
    message = fault.message or (
        "Resource has been exhausted (e.g. check quota)."
        if fault.status == 429
        else f"The model is overloaded. Please try again later. (sandbox fault {fault.status})"
    )
    return error_response(fault.status, message, headers)


# --- generateContent --------------------------------------------------------------------


def _generate(model: str, body: dict[str, Any], state: SandboxState) -> Response:
    prompt = _parse(model, body)
    reply = reply_to(prompt, state.settings.answer_tokens, state.settings.max_tokens_overrun)
    thought = _thought(body, prompt, reply)
    parts = _parts(model, reply)
    if thought is not None and thought.shown:
        parts.insert(0, {"text": thought.text, "thought": True})
    response = _response(model, parts, reply, final=True, thoughts=thought)
    return json_response(response)


def _stream(
    model: str, body: dict[str, Any], state: SandboxState, alt: str | None, fault: Fault | None
) -> Response:
    prompt = _parse(model, body)
    reply = reply_to(prompt, state.settings.answer_tokens, state.settings.max_tokens_overrun)
    thought = _thought(body, prompt, reply)
    response_id = new_id("")
    chunks: list[dict[str, Any]]
    if reply.tool_calls:
        # Function calls arrive whole, in one chunk.
        parts = _parts(model, reply)
        chunks = [
            _response(model, parts, reply, final=True, response_id=response_id, thoughts=thought)
        ]
    else:
        pieces = split_text(reply.text, state.settings.stream_chunks)
        chunks = [
            _response(
                model,
                [{"text": piece}],
                reply,
                final=position == len(pieces) - 1,
                response_id=response_id,
                thoughts=thought,
            )
            for position, piece in enumerate(pieces)
        ]
    if thought is not None and thought.shown:
        # The thought summary streams first, a chunk of its own.
        first = _response(model, [{"text": thought.text, "thought": True}], reply, final=False)
        chunks.insert(0, {**first, "responseId": response_id})
    if alt != "sse":
        # Without alt=sse the API answers with one JSON array of all chunks.
        return json_response(chunks)
    events = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks]
    return EventStreamResponse(
        events, state.settings, cut_after=fault.after_chunks if fault is not None else None
    )


def _parse(model: str, body: dict[str, Any]) -> Prompt:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    prompt = Prompt()
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        _read_parts(system.get("parts"), prompt, "system", model)
    for content in contents:
        if not isinstance(content, dict):
            raise BadRequest("* GenerateContentRequest.contents: each content must be an object")
        role = content.get("role", "user")
        text, function_responses = _read_parts(content.get("parts"), prompt, role, model)
        if role == "model":
            prompt.tool_result = None
        else:
            prompt.tool_result = "; ".join(function_responses) if function_responses else None
            if text or not function_responses:
                prompt.last_user_text = text

    prompt.tools = _allowed_tools(body, prompt)
    config = body.get("generationConfig")
    if isinstance(config, dict):
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseJsonSchema", config.get("responseSchema"))
            if isinstance(schema, dict):
                prompt.json_schema = schema
            else:
                prompt.json_object = True
        max_tokens = config.get("maxOutputTokens")
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
            prompt.max_tokens = max_tokens
    return prompt


def _read_parts(parts: Any, prompt: Prompt, role: str, model: str) -> tuple[str, list[str]]:
    if not isinstance(parts, list):
        raise BadRequest("* GenerateContentRequest.contents[].parts: parts must be a list")
    texts: list[str] = []
    function_responses: list[str] = []
    signed = False
    for part in parts:
        if not isinstance(part, dict):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
            prompt.add_text(texts[-1])
        elif isinstance(part.get("inlineData"), dict):
            prompt.images.append(image_from_base64(str(part["inlineData"].get("data", ""))))
        elif isinstance(part.get("fileData"), dict):
            prompt.images.append(ImageRef(url=str(part["fileData"].get("fileUri", ""))))
        elif isinstance(part.get("functionCall"), dict):
            # Gemini 3 rejects a replayed function-calling turn whose first call lost
            # its thought signature; the gateway must carry it through.
            if _uses_thought_signatures(model) and not signed and not part.get("thoughtSignature"):
                raise BadRequest(
                    "Function call is missing a thought_signature in functionCall parts. "
                    "This is required for tools to work correctly."
                )
            signed = True
            prompt.add_text(orjson.dumps(part["functionCall"].get("args", {})).decode())
        elif isinstance(part.get("functionResponse"), dict):
            response = part["functionResponse"].get("response", {})
            rendered = orjson.dumps(response).decode()
            function_responses.append(rendered)
            prompt.add_text(rendered)
    return "\n".join(texts), function_responses


def _uses_thought_signatures(model: str) -> bool:
    return model.startswith("gemini-3")


def _allowed_tools(body: dict[str, Any], prompt: Prompt) -> list[ToolSpec]:
    offered: list[ToolSpec] = []
    for tool in body.get("tools") or ():
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for declaration in declarations or ():
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str):
                raise BadRequest("* tools[].function_declarations[].name: name is required")
            schema = declaration.get("parametersJsonSchema", declaration.get("parameters"))
            offered.append(ToolSpec(name, schema if isinstance(schema, dict) else {}))
            prompt.add_text(name + str(declaration.get("description", "")))
    tool_config = body.get("toolConfig")
    calling = tool_config.get("functionCallingConfig") if isinstance(tool_config, dict) else None
    calling = calling if isinstance(calling, dict) else {}
    mode = str(calling.get("mode", "AUTO")).upper()
    if mode == "NONE" or not offered:
        return []
    if mode not in ("AUTO", "ANY", "VALIDATED", "MODE_UNSPECIFIED"):
        raise BadRequest(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode})")
    allowed = calling.get("allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        offered = [tool for tool in offered if tool.name in allowed]
    return offered


@dataclass(frozen=True, slots=True)
class Thought:
    """What a thinking model thought: its summary, shown only with `includeThoughts`."""

    text: str
    tokens: int
    shown: bool


_THINKING_BUDGET_MAX = 32768


def _thought(body: dict[str, Any], prompt: Prompt, reply: Reply) -> Thought | None:
    """Gemini 2.5 thinks when `thinkingConfig.thinkingBudget` allows it (-1: as it sees
    fit, 0: not at all) and bills the thoughts as output (`thoughtsTokenCount`); the
    summary comes back as a `thought: true` part only when `includeThoughts` is set."""
    config = body.get("generationConfig")
    thinking = config.get("thinkingConfig") if isinstance(config, dict) else None
    if not isinstance(thinking, dict):
        return None
    # The API reads proto JSON, which takes both spellings (google-genai sends snake_case).
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget", -1))
    if (
        not isinstance(budget, int)
        or isinstance(budget, bool)
        or not (-1 <= budget <= _THINKING_BUDGET_MAX)
    ):
        raise BadRequest(
            f"* GenerationConfig.thinking_config.thinking_budget: must be between -1 and "
            f"{_THINKING_BUDGET_MAX}"
        )
    if budget == 0:
        return None
    text = f"Thinking about {short_hash(prompt.last_user_text)}: the plain answer will do."
    shown = thinking.get("includeThoughts", thinking.get("include_thoughts")) is True
    return Thought(text, estimate_tokens(len(text)), shown)


def _parts(model: str, reply: Reply) -> list[dict[str, Any]]:
    if not reply.tool_calls:
        return [{"text": reply.text}]
    parts: list[dict[str, Any]] = []
    for position, call in enumerate(reply.tool_calls):
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
        if position == 0 and _uses_thought_signatures(model):
            part["thoughtSignature"] = base64.b64encode(f"sig-{call.key}".encode()).decode()
        parts.append(part)
    return parts


def _response(
    model: str,
    parts: list[dict[str, Any]],
    reply: Reply,
    *,
    final: bool,
    response_id: str | None = None,
    thoughts: Thought | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    usage: dict[str, Any] = {
        "promptTokenCount": reply.prompt_tokens,
        "totalTokenCount": reply.prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    }
    if final:
        candidate["finishReason"] = "MAX_TOKENS" if reply.hit_max_tokens else "STOP"
        usage["candidatesTokenCount"] = reply.completion_tokens
        usage["totalTokenCount"] = reply.prompt_tokens + reply.completion_tokens
        if thoughts is not None:
            usage["thoughtsTokenCount"] = thoughts.tokens
            usage["totalTokenCount"] += thoughts.tokens
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id or new_id(""),
    }


# --- embeddings -----------------------------------------------------------------------


def _embed_one(model: str, request: dict[str, Any]) -> dict[str, Any]:
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise BadRequest("* EmbedContentRequest.content: content is not specified")
    text = "\n".join(str(part.get("text", "")) for part in parts if isinstance(part, dict))
    dimensions = _EMBEDDING_DIMENSIONS.get(model, _DEFAULT_EMBEDDING_DIMENSIONS)
    requested = request.get("outputDimensionality")
    if requested is not None:
        if not isinstance(requested, int) or not 1 <= requested <= dimensions:
            raise BadRequest(f"outputDimensionality must be between 1 and {dimensions}")
        dimensions = requested
    return {"values": list(embedding(text, dimensions))}


def _batch_embed(model: str, body: dict[str, Any]) -> Response:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
    embeddings = []
    for item in requests:
        if not isinstance(item, dict):
            raise BadRequest("* BatchEmbedContentsRequest.requests: each request must be an object")
        item_model = str(item.get("model", model)).removeprefix("models/")
        embeddings.append(_embed_one(item_model, item))
    return json_response({"embeddings": embeddings})
