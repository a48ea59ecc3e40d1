"""OpenAI's Responses API served untranslated: a /v1/responses call that reaches an
`openai` route is POSTed to the provider's own `/responses` endpoint.

The edge has already made the body self-contained (no `previous_response_id`, `store`
false, conversation spelled out in `input`); this only puts the route's upstream model in,
caps `max_output_tokens` at the catalog model's maximum (what admission reserved for) and
sets `stream` as the call is made. Answers and stream events go back as OpenAI sent them,
for the edge to put its own ids on; the router only reads usage from them, notices the end
of a stream and turns failures into its usual OpenAI-shaped UpstreamError.
"""

from __future__ import annotations

from typing import Any

import orjson

from aig_common.usage import TokenUsage

from ..adapters import openai_compat
from ..adapters.base import UpstreamError, make_upstream_error
from .base import ChatCall, UpstreamRequest

# Stream events that end a Responses stream with its final usage.
_DONE = ("response.completed", "response.incomplete")
# Error codes OpenAI puts in a stream's `error` event or a failed response, and the HTTP
# status they stand for (anything else is the provider failing: 502).
_CODE_STATUS = {"rate_limit_exceeded": 429, "server_error": 500, "server_is_overloaded": 503}


def build_responses_request(
    body: dict[str, Any], upstream_model: str, max_output_tokens: int, *, stream: bool
) -> dict[str, Any]:
    """The client's Responses body for one route: its model, the output capped, `stream`."""
    request = {
        key: value for key, value in body.items() if key not in openai_compat.AIG_ONLY_FIELDS
    }
    request["model"] = upstream_model
    asked = request.get("max_output_tokens")
    if not isinstance(asked, int) or isinstance(asked, bool) or asked > max_output_tokens:
        request["max_output_tokens"] = max_output_tokens
    if stream:
        request["stream"] = True
    else:
        request.pop("stream", None)
        request.pop("stream_options", None)
    return request


def usage_from_responses(usage: Any) -> TokenUsage:
    """A Responses `usage` object; output_tokens already include the reasoning tokens."""
    if not isinstance(usage, dict):
        return TokenUsage()
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_prompt_tokens=int(input_details.get("cached_tokens") or 0),
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
    )


def _error(code: Any, message: Any) -> UpstreamError:
    code_text = code if isinstance(code, str) and code else None
    return make_upstream_error(
        _CODE_STATUS.get(code_text or "", 502),
        str(message or "upstream stream failed"),
        code=code_text,
    )


class OpenAIResponsesRequest(UpstreamRequest):
    """A /v1/responses body passed through to OpenAI's Responses API."""

    native = True
    error_from_response = staticmethod(openai_compat.error_from_response)

    def __init__(self, path: str, call: ChatCall) -> None:
        assert call.native is not None
        self.path = path
        upstream = build_responses_request(
            call.native.body,
            call.target.upstream_id,
            call.target.model.max_output_tokens,
            stream=call.stream,
        )
        self.content = orjson.dumps(upstream)
        self._usage: TokenUsage | None = None
        self._done = False

    def parse_completion(self, payload: dict[str, Any]) -> tuple[dict[str, Any], TokenUsage]:
        return payload, usage_from_responses(payload.get("usage"))

    def translate_event(self, event: str | None, data: str) -> list[dict[str, Any]]:
        if not data or data.startswith("[DONE]"):
            return []
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        if kind is None and payload.get("error"):
            raise openai_compat.error_from_stream_payload(payload)
        if kind == "error":
            raise _error(payload.get("code"), payload.get("message"))
        response = payload.get("response")
        if kind in (*_DONE, "response.failed") and isinstance(response, dict):
            if response.get("usage"):
                self._usage = usage_from_responses(response["usage"])
            if kind == "response.failed":
                failure = response.get("error") or {}
                raise _error(failure.get("code"), failure.get("message"))
            self._done = True
        return [payload]

    def is_done(self) -> bool:
        return self._done

    def usage(self) -> TokenUsage | None:
        return self._usage

    def output_pieces(self, chunk: dict[str, Any]) -> list[tuple[tuple[int, int], str]]:
        kind = chunk.get("type")
        delta = chunk.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        index = int(chunk.get("output_index") or 0)
        if kind == "response.output_text.delta":
            return [((index, -1), delta)]
        if kind == "response.function_call_arguments.delta":
            return [((index, 0), delta)]
        return []
