"""OpenAI's Images API: `POST /openai/v1/images/generations`, synchronous.

`gpt-image-1` (and `gpt-image-1-mini`) always answer `b64_json` and report token usage;
`dall-e-2` / `dall-e-3` answer `url` (default) or `b64_json` per `response_format`. The
answer waits `media_render_ms` (image models take seconds), then carries `n` PNGs;
URLs point at `/openai/v1/images/files/{name}`. Auth, latency and faults are the chat
simulator's (provider `openai`).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.providers.openai_api import OPENAI, BadRequest, Flavor, _error, _serve
from sandbox.renders import file_bytes, new_render
from sandbox.state import Fault, SandboxState
from sandbox.transport import json_response

PREFIX = "/openai/v1/images"
_GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_DALLE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
# Output tokens gpt-image-1 bills for a 1024x1024 image, by quality (OpenAI's table).
_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}


def routes(state: SandboxState) -> list[Route]:
    async def generations(request: Request) -> Response:
        response = await _serve(request, state, OPENAI, generate)
        if response.status_code == 200 and state.settings.media_render_ms:
            await asyncio.sleep(state.settings.media_render_ms / 1000)
        return response

    async def files(request: Request) -> Response:
        found = state.renders.file(request.path_params["name"])
        if found is None:
            return _error(OPENAI, 404, "File not found")
        data, content_type = found
        return Response(data, media_type=content_type)

    return [
        Route(f"{PREFIX}/generations", generations, methods=["POST"]),
        Route(f"{PREFIX}/files/{{name}}", files, methods=["GET"]),
    ]


def generate(
    request: Request,
    state: SandboxState,
    flavor: Flavor,
    body: dict[str, Any],
    fault: Fault | None,
) -> Response:
    model = body.get("model") or "dall-e-2"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
    gpt_image = isinstance(model, str) and model.startswith("gpt-image-1")
    if not gpt_image and model not in _DALLE_SIZES:
        raise BadRequest(f"Invalid value for 'model' = {model}.", "model")
    n = body.get("n", 1)
    most = 1 if model == "dall-e-3" else 10
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most:
        raise BadRequest(f"Invalid 'n': must be between 1 and {most}.", "n")
    size = body.get("size", "auto" if gpt_image else "1024x1024")
    if size not in (_GPT_IMAGE_SIZES if gpt_image else _DALLE_SIZES[model]):
        raise BadRequest(f"Invalid value: '{size}'. Supported values are not this.", "size")
    response_format = body.get("response_format")
    if gpt_image and response_format is not None:
        raise BadRequest("Unknown parameter: 'response_format'.", "response_format")
    if response_format not in (None, "url", "b64_json"):
        raise BadRequest("Invalid value for 'response_format'.", "response_format")

    render = new_render(
        f"img-{uuid.uuid4().hex}",
        "openai",
        model,
        {**body, "n": n},
        api_key="",
        queue_ms=0,
        render_ms=0,
        failure=None,
        webhook=None,
        extra={},
    )
    state.renders.add(render, None)
    base = f"{str(request.base_url).rstrip('/')}{PREFIX}/files"
    as_url = not gpt_image and response_format != "b64_json"
    data = [
        {"url": f"{base}/{output.name}"}
        if as_url
        else {"b64_json": base64.b64encode(file_bytes(output)).decode()}
        for output in render.outputs
    ]
    if model == "dall-e-3":
        data = [item | {"revised_prompt": prompt} for item in data]
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        quality = body.get("quality", "auto")
        text_tokens = max(1, len(prompt) // 4)
        output_tokens = _OUTPUT_TOKENS.get(str(quality), 1056) * n
        answer |= {
            "background": "opaque",
            "output_format": "png",  # the sandbox renders PNG whatever was asked
            "quality": "medium" if quality == "auto" else quality,
            "size": "1024x1024" if size == "auto" else size,
            "usage": {
                "input_tokens": text_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + output_tokens,
            },
        }
    return json_response(answer, headers={"x-request-id": f"req_{uuid.uuid4().hex}"})
