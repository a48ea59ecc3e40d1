"""The router's chat answers in Anthropic's shapes: a `message` object, or its SSE events.

Usage comes from the router's metered `TokenUsage` (what the call is billed for), not from
the chunks: `input_tokens` excludes cache reads, as Anthropic counts them, and a stream
reports the whole usage on `message_delta`, when the router knows it.

A stream is a sequence of content blocks; chat chunks interleave text and tool-call
fragments by tool index. `StreamTranslator` opens a block when the kind of output changes
(text, or a new tool call) and closes the open one first, so block indexes rise one by one
as Anthropic's clients expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from aig.router.v1 import router_pb2 as pb

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason_for(finish_reason: str | None) -> str:
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def message_id(request_id: str) -> str:
    """`msg_…` from the request id (`req_…`), so a message is traced by the id it carries."""
    return "msg_" + request_id.removeprefix("req_")


def usage_object(usage: pb.TokenUsage) -> dict[str, int]:
    cached = usage.cached_prompt_tokens
    written = usage.cache_write_prompt_tokens + usage.cache_write_1h_prompt_tokens
    return {
        "input_tokens": max(0, usage.prompt_tokens - cached - written),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as Anthropic's `input` object. Arguments that are not a
    JSON object (a model's malformed output) arrive whole under `arguments`, not dropped."""
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return {"arguments": arguments}
        if isinstance(parsed, dict):
            return parsed
    return {"arguments": arguments}


def completion_to_message(
    completion: dict[str, Any], usage: pb.TokenUsage, request_id: str
) -> dict[str, Any]:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thought = reply.get("reasoning_content")
    if isinstance(thought, str) and thought:
        # A translated model's reasoning summary (Gemini's thoughts): a thinking block with
        # no signature, since only Anthropic signs its own.
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    text = reply.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": stop_reason_for(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage_object(usage),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass
class StreamTranslator:
    """Feeds on chat.completion.chunk objects, yields Anthropic SSE frames."""

    request_id: str
    model: str
    _started: bool = False
    # Index and kind ("text", "thinking", or the chat tool index as "tool:N") of the open
    # block.
    _open: tuple[int, str] | None = None
    _next_index: int = 0
    # Chat tool index → (block index, call id).
    _block_of_tool: dict[int, tuple[int, str]] = field(default_factory=dict)
    _finish_reason: str | None = None

    def start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(self.request_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Counted once the router has the provider's usage: see `end`.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            sse("message_start", {"type": "message_start", "message": message}),
            sse("ping", {"type": "ping"}),
        ]

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        frames = self.start()
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning_content")
            if isinstance(thought, str) and thought:
                block = {"type": "thinking", "thinking": "", "signature": ""}
                index = self._open_block("thinking", block, frames)
                frames.append(_delta(index, {"type": "thinking_delta", "thinking": thought}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                index = self._open_block("text", {"type": "text", "text": ""}, frames)
                frames.append(_delta(index, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                frames.extend(self._tool_fragment(call))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return frames

    def _tool_fragment(self, call: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        tool = call.get("index", 0)
        function = call.get("function") or {}
        call_id = call.get("id") or ""
        known = self._block_of_tool.get(tool)
        # Some servers repeat the id on every fragment: only a new id starts a new call.
        if known is None or (call_id and call_id != known[1]):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id,
                "name": function.get("name") or "",
                "input": {},
            }
            known = (self._open_block(f"tool:{tool}", block, frames), call_id)
            self._block_of_tool[tool] = known
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A fragment of an earlier call (rare interleaving) goes to that call's block.
            index = known[0]
            frames.append(_delta(index, {"type": "input_json_delta", "partial_json": arguments}))
        return frames

    def _open_block(self, kind: str, block: dict[str, Any], frames: list[bytes]) -> int:
        if self._open is not None and self._open[1] == kind and kind in ("text", "thinking"):
            return self._open[0]
        frames.extend(self._close_block())
        index = self._next_index
        self._next_index += 1
        self._open = (index, kind)
        frames.append(
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        return index

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[0]
        self._open = None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": index})]

    def end(self, usage: pb.TokenUsage) -> list[bytes]:
        frames = self.start() + self._close_block()
        delta = {"stop_reason": stop_reason_for(self._finish_reason), "stop_sequence": None}
        frames.append(
            sse(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": usage_object(usage)},
            )
        )
        frames.append(sse("message_stop", {"type": "message_stop"}))
        return frames


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def error_event(error_bytes: bytes) -> bytes:
    """An error after the 200 went out: Anthropic's `event: error`, after which the stream
    ends without `message_stop` (the SDK raises it)."""
    return b"event: error\ndata: " + error_bytes + b"\n\n"
