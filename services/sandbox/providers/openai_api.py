"""OpenAI Chat Completions, Embeddings and Models, also served as OpenRouter and Azure OpenAI.

Azure OpenAI names the model in the URL, not the body
(`/openai/deployments/{deployment}/chat/completions?api-version=...`), takes its key in an
`api-key` header, and refuses a call without an `api-version`.

OpenRouter speaks the same format with a few additions: a `provider` field, `usage.cost`
(USD, float, as OpenRouter sends it), usage always in the last stream chunk, errors
with a numeric `code`, and mid-stream failures as an error chunk with
`finish_reason: "error"`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aig_common.errors import error_body
from sandbox.dialogue import Prompt, Reply, ToolSpec, reply_to
from sandbox.images import ImageRef, image_from_url
from sandbox.providers.common import bearer_token, fragments, read_and_log, sse_data
from sandbox.state import Fault, SandboxState
from sandbox.synth import embedding, embedding_base64, estimate_tokens, new_id, split_text
from sandbox.transport import EventStreamResponse, InvalidBody, first_byte_delay, json_response

_DONE = b"data: [DONE]\n\n"
_TOOL_ARGUMENT_FRAGMENTS = 3


@dataclass(frozen=True, slots=True)
class Flavor:
    provider: str
    id_prefix: str
    models: tuple[dict[str, Any], ...]
    # USD per million tokens (input, output), only OpenRouter reports cost.
    reports_cost: bool = False
    always_stream_usage: bool = False
    # Azure: the key arrives in this header instead of `Authorization: Bearer`.
    key_header: str | None = None


_CREATED = 1_700_000_000

OPENAI = Flavor(
    provider="openai",
    id_prefix="chatcmpl-",
    models=tuple(
        {"id": model_id, "object": "model", "created": _CREATED, "owned_by": owner}
        for model_id, owner in (
            ("gpt-4o", "system"),
            ("gpt-4o-mini", "system"),
            ("gpt-4.1", "system"),
            ("gpt-4.1-mini", "system"),
            ("o4-mini", "system"),
            ("text-embedding-3-small", "system"),
            ("text-embedding-3-large", "system"),
            ("text-embedding-ada-002", "openai-internal"),
        )
    ),
)

_OPENROUTER_PRICES = {
    # model id: (USD per million input tokens, per million output tokens) as strings per token
    "deepseek/deepseek-chat": ("0.00000027", "0.0000011"),
    "mistralai/mistral-large": ("0.000002", "0.000006"),
    "openai/gpt-4o-mini": ("0.00000015", "0.0000006"),
    "anthropic/claude-sonnet-4": ("0.000003", "0.000015"),
    "meta-llama/llama-3.3-70b-instruct": ("0.00000013", "0.0000004"),
    "google/gemini-2.5-flash": ("0.0000003", "0.0000025"),
    "openai/text-embedding-3-small": ("0.00000002", "0"),
}

OPENROUTER = Flavor(
    provider="openrouter",
    id_prefix="gen-",
    models=tuple(
        {
            "id": model_id,
            "object": "model",
            "created": _CREATED,
            "owned_by": model_id.split("/")[0],
            "name": model_id,
            "context_length": 131072,
            "pricing": {"prompt": prompt, "completion": completion},
        }
        for model_id, (prompt, completion) in _OPENROUTER_PRICES.items()
    ),
    reports_cost=True,
    always_stream_usage=True,
)

AZURE = Flavor(provider="azure", id_prefix="chatcmpl-", models=OPENAI.models, key_header="api-key")

# Upstream names OpenRouter reports in `provider`, by model-id prefix.
_OPENROUTER_UPSTREAMS = {
    "deepseek": "DeepSeek",
    "mistralai": "Mistral",
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "meta-llama": "DeepInfra",
    "google": "Google AI Studio",
}

_EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_DEFAULT_EMBEDDING_DIMENSIONS = 1536


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def routes(state: SandboxState) -> list[Route]:
    return [
        *_routes_for(OPENAI, "/openai/v1", state),
        *_routes_for(OPENROUTER, "/openrouter/api/v1", state),
        *_azure_routes(state),
    ]


def _azure_routes(state: SandboxState) -> list[Route]:
    def for_deployment(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not request.query_params.get("api-version"):
                state.requests.record(
                    AZURE.provider,
                    request.url.path,
                    request.url.query,
                    request.scope["headers"],
                    None,
                )
                return json_response(
                    {"error": {"code": "404", "message": "Resource not found"}}, 404
                )

            def serve_deployment(
                request: Request,
                state: SandboxState,
                flavor: Flavor,
                body: dict[str, Any],
                fault: Fault | None,
            ) -> Response:
                # The deployment decides the model, whatever the body says.
                deployed = {**body, "model": request.path_params["deployment"]}
                return handler(request, state, flavor, deployed, fault)

            return await _serve(request, state, AZURE, serve_deployment)

        return endpoint

    prefix = "/azure/openai/deployments/{deployment}"
    return [
        Route(f"{prefix}/chat/completions", for_deployment(_chat_completion), methods=["POST"]),
        Route(f"{prefix}/embeddings", for_deployment(_embeddings), methods=["POST"]),
    ]


def _routes_for(flavor: Flavor, prefix: str, state: SandboxState) -> list[Route]:
    async def chat_completions(request: Request) -> Response:
        return await _serve(request, state, flavor, _chat_completion)

    async def embeddings(request: Request) -> Response:
        return await _serve(request, state, flavor, _embeddings)

    async def list_models(request: Request) -> Response:
        return await _serve(request, state, flavor, _list_models, has_body=False)

    async def retrieve_model(request: Request) -> Response:
        return await _serve(request, state, flavor, _retrieve_model, has_body=False)

    return [
        Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
        Route(f"{prefix}/embeddings", embeddings, methods=["POST"]),
        Route(f"{prefix}/models", list_models, methods=["GET"]),
        Route(f"{prefix}/models/{{model_id:path}}", retrieve_model, methods=["GET"]),
    ]


async def _serve(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    handler: Any,
    *,
    has_body: bool = True,
) -> Response:
    body: dict[str, Any] | InvalidBody = {}
    if has_body:
        body = await read_and_log(request, state, flavor.provider)
    else:
        state.requests.record(
            flavor.provider, request.url.path, request.url.query, request.scope["headers"], None
        )
    await first_byte_delay(state.settings)
    if flavor.key_header is not None and not request.headers.get(flavor.key_header):
        return _error(
            flavor,
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.",
            code="401",
        )
    if flavor.key_header is None and not bearer_token(request):
        return _error(
            flavor,
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    if isinstance(body, InvalidBody):
        return _error(flavor, 400, str(body))
    streaming = body.get("stream") is True
    fault = state.faults.take(flavor.provider, streaming=streaming)
    if fault is not None and fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault is not None and fault.fails_up_front:
        return _fault_response(flavor, fault)
    try:
        response: Response = handler(request, state, flavor, body, fault)
    except BadRequest as exc:
        return _error(flavor, 400, exc.message, code=exc.code, param=exc.param)
    return response


def _error(
    flavor: Flavor,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    all_headers = {"x-request-id": new_id("req_"), **(headers or {})}
    if flavor.reports_cost:
        # OpenRouter's error body: a numeric code and a message.
        return json_response(
            {"error": {"code": status, "message": message, "metadata": None}},
            status,
            all_headers,
        )
    return json_response(
        error_body(message, status=status, code=code, param=param), status, all_headers
    )


def _fault_response(flavor: Flavor, fault: Fault) -> Response:
    headers = {"retry-after": str(fault.retry_after)} if fault.status == 429 else None
    code = "rate_limit_exceeded" if fault.status == 429 else None
    message = fault.message or (
        "Rate limit reached for requests (sandbox fault)"
        if fault.status == 429
        else f"The server had an error while processing your request (sandbox fault {fault.status})"
    )
    return _error(flavor, fault.status, message, code=code, headers=headers)


# --- chat completions -------------------------------------------------------------


def _chat_completion(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    prompt = _prompt_from(body)
    reply = reply_to(prompt, state.settings.answer_tokens, state.settings.max_tokens_overrun)
    usage = _usage(flavor, model, reply)
    response_id = new_id(flavor.id_prefix)
    created = int(time.time())
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = flavor.always_stream_usage or (
            isinstance(options, dict) and options.get("include_usage") is True
        )
        events = _stream_events(
            flavor, response_id, created, model, reply, usage, include_usage, state
        )
        cut_after = fault.after_chunks if fault is not None else None
        cut_event = (
            _openrouter_stream_error(flavor, response_id, created, model, fault)
            if fault is not None and flavor.reports_cost
            else None
        )
        return EventStreamResponse(
            events,
            state.settings,
            headers={"x-request-id": new_id("req_")},
            cut_after=cut_after,
            cut_event=cut_event,
            # OpenAI flushes the usage chunk and [DONE] together with the finish chunk.
            unpaced_tail=2 if include_usage else 1,
        )
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{call.key}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in reply.tool_calls
        ]
    else:
        message["content"] = reply.text
    completion: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "usage": usage,
        "system_fingerprint": "fp_sandbox",
    }
    if flavor.reports_cost:
        completion["provider"] = _openrouter_upstream(model)
    return json_response(completion, headers={"x-request-id": new_id("req_")})


def _prompt_from(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    prompt = Prompt()
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object", "messages")
        role = message.get("role")
        text = read_content(message.get("content"), prompt, ("text",), _chat_image)
        if role == "user":
            prompt.last_user_text = text
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                prompt.add_text(str(function.get("arguments", "")))
    prompt.tool_result = trailing_tool_results(messages, _is_tool_message, "content")

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        prompt.max_tokens = max_tokens
    prompt.allow_parallel_tools = body.get("parallel_tool_calls") is not False
    prompt.tools = _allowed_tools(body, prompt)
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            prompt.json_object = True
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not spec.get("name"):
                raise BadRequest(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    "response_format.json_schema.name",
                )
            schema = spec.get("schema")
            prompt.json_schema = schema if isinstance(schema, dict) else {}
    return prompt


def read_content(
    content: Any,
    prompt: Prompt,
    text_types: tuple[str, ...],
    image_of: Callable[[dict[str, Any]], ImageRef | None],
) -> str:
    """Text of a message's content, a string or a list of parts whose text parts are
    `text_types`; `image_of` reads a part as an image (None: not one), which the prompt
    gets. Chat and Responses name their parts apart."""
    if isinstance(content, str):
        prompt.add_text(content)
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") in text_types:
            text = str(part.get("text", ""))
            texts.append(text)
            prompt.add_text(text)
        elif (image := image_of(part)) is not None:
            prompt.images.append(image)
    return "\n".join(texts)


def _chat_image(part: dict[str, Any]) -> ImageRef | None:
    if part.get("type") != "image_url":
        return None
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise BadRequest("image_url.url must be a non-empty string", "messages")
    return image_from_url(url)


def _is_tool_message(message: dict[str, Any]) -> bool:
    return message.get("role") in ("tool", "function")


def trailing_tool_results(
    turns: list[Any], is_result: Callable[[dict[str, Any]], bool], key: str
) -> str | None:
    """The tool results the conversation ends with (their `key` text, joined): when there
    are any, the turn the model answers is theirs. Chat and Responses mark them apart."""
    results: list[str] = []
    for turn in reversed(turns):
        if not isinstance(turn, dict) or not is_result(turn):
            break
        results.append(_content_text(turn.get(key)))
    return "; ".join(reversed(results)) if results else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _allowed_tools(body: dict[str, Any], prompt: Prompt) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest("tools[].function.name is required", "tools")
        parameters = function.get("parameters")
        tools.append(ToolSpec(function["name"], parameters if isinstance(parameters, dict) else {}))
        prompt.add_text(function["name"] + str(function.get("description", "")))
    return apply_tool_choice(tools, body.get("tool_choice", "auto"), _chat_choice_names)


def _chat_choice_names(choice: dict[str, Any]) -> set[str]:
    """Names a chat `tool_choice` object allows: the function is nested under `function`."""
    if choice.get("type") == "function":
        return {str((choice.get("function") or {}).get("name"))}
    if choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        return {
            str((entry.get("function") or {}).get("name"))
            for entry in allowed.get("tools") or ()
            if isinstance(entry, dict)
        }
    raise BadRequest("unsupported tool_choice", "tool_choice")


def apply_tool_choice(
    tools: list[ToolSpec], choice: Any, names_in: Callable[[dict[str, Any]], set[str]]
) -> list[ToolSpec]:
    """The tools the model may call under `tool_choice`. Chat and Responses share the
    string modes and differ only in how a choice object names tools, which `names_in` reads."""
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        names = names_in(choice)
        chosen = [tool for tool in tools if tool.name in names]
        if not chosen:
            raise BadRequest("tool_choice names a tool that is not in 'tools'", "tool_choice")
        return chosen
    if choice not in ("auto", "required"):
        raise BadRequest(f"invalid tool_choice {choice!r}", "tool_choice")
    return tools


def _finish_reason(reply: Reply) -> str:
    if reply.tool_calls:
        return "tool_calls"
    return "length" if reply.hit_max_tokens else "stop"


def _usage(flavor: Flavor, model: str, reply: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    if flavor.reports_cost:
        usage["cost"] = _openrouter_cost(model, reply.prompt_tokens, reply.completion_tokens)
    return usage


def _openrouter_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    prompt_price, completion_price = _OPENROUTER_PRICES.get(model, ("0.000001", "0.000002"))
    # Prices are per token in USD; compute in nano-USD integers, report USD like OpenRouter.
    nano = prompt_tokens * round(float(prompt_price) * 1e9) + completion_tokens * round(
        float(completion_price) * 1e9
    )
    return nano / 1e9


def _openrouter_upstream(model: str) -> str:
    return _OPENROUTER_UPSTREAMS.get(model.split("/")[0], "Sandbox")


def _stream_events(
    flavor: Flavor,
    response_id: str,
    created: int,
    model: str,
    reply: Reply,
    usage: dict[str, Any],
    include_usage: bool,
    state: SandboxState,
) -> list[bytes]:
    base: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_sandbox",
    }
    if flavor.reports_cost:
        base["provider"] = _openrouter_upstream(model)

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            payload["usage"] = None
        return sse_data(payload)

    events: list[bytes] = []
    if reply.tool_calls:
        events.append(chunk({"role": "assistant", "content": None, "refusal": None}))
        for index, call in enumerate(reply.tool_calls):
            first = {
                "index": index,
                "id": f"call_{call.key}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [first]}))
            for piece in fragments(call.arguments_json, _TOOL_ARGUMENT_FRAGMENTS):
                events.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
    else:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in split_text(reply.text, state.settings.stream_chunks):
            events.append(chunk({"content": piece}))
    events.append(chunk({}, _finish_reason(reply)))
    if include_usage:
        events.append(sse_data({**base, "choices": [], "usage": usage}))
    events.append(_DONE)
    return events


def _openrouter_stream_error(
    flavor: Flavor, response_id: str, created: int, model: str, fault: Fault
) -> bytes:
    """OpenRouter reports a failure after HTTP 200 as one last chunk carrying `error`."""
    return sse_data(
        {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "provider": _openrouter_upstream(model),
            "error": {
                "code": fault.status,
                "message": fault.message or "Upstream provider failed mid-stream (sandbox fault)",
            },
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    )


# --- embeddings ---------------------------------------------------------------------


def _embeddings(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    texts, tokens = _embedding_inputs(body.get("input"))
    base_model = model.split("/")[-1]
    dimensions = _EMBEDDING_DIMENSIONS.get(base_model, _DEFAULT_EMBEDDING_DIMENSIONS)
    requested = body.get("dimensions")
    if requested is not None:
        if base_model == "text-embedding-ada-002":
            raise BadRequest("This model does not support specifying dimensions.", "dimensions")
        if not isinstance(requested, int) or not 1 <= requested <= dimensions:
            raise BadRequest(f"dimensions must be between 1 and {dimensions}", "dimensions")
        dimensions = requested
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("encoding_format must be 'float' or 'base64'", "encoding_format")
    vector = embedding_base64 if encoding == "base64" else embedding
    data = [
        {"object": "embedding", "index": index, "embedding": vector(text, dimensions)}
        for index, text in enumerate(texts)
    ]
    usage: dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens}
    if flavor.reports_cost:
        usage["cost"] = _openrouter_cost(model, tokens, 0)
    return json_response(
        {"object": "list", "data": data, "model": model, "usage": usage},
        headers={"x-request-id": new_id("req_")},
    )


def _embedding_inputs(raw: Any) -> tuple[list[str], int]:
    """Normalise every accepted `input` shape to hashable texts plus a token count."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(_is_token(item) for item in raw):
        items = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        items = []
    if not items:
        raise BadRequest("'input' must be a non-empty string or array", "input")
    if len(items) > 2048:
        raise BadRequest("'input' must have at most 2048 items", "input")
    texts: list[str] = []
    tokens = 0
    for item in items:
        if isinstance(item, str) and item:
            texts.append(item)
            tokens += estimate_tokens(len(item))
        elif isinstance(item, list) and item and all(_is_token(token) for token in item):
            texts.append("tokens:" + orjson.dumps(item).decode())
            tokens += len(item)
        else:
            raise BadRequest("each 'input' item must be a non-empty string or token array", "input")
    return texts, tokens


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- models ---------------------------------------------------------------------------


def _list_models(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    return json_response({"object": "list", "data": list(flavor.models)})


def _retrieve_model(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    model_id = request.path_params["model_id"]
    for model in flavor.models:
        if model["id"] == model_id:
            return json_response(model)
    return _error(
        flavor,
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        code="model_not_found",
    )
