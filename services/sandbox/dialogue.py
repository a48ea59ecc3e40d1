"""What the simulated model answers, independent of any provider's wire format.

Each provider module parses its request into a `Prompt`; `reply_to` decides the answer
(text, JSON, or tool calls); the provider module renders it in its own format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sandbox.images import ImageRef
from sandbox.schema_instance import instance_for
from sandbox.synth import estimate_tokens, filler, short_hash

# Tokens an image adds to the prompt (OpenAI's low-detail price), so usage grows with images.
IMAGE_PROMPT_TOKENS = 85


@dataclass(slots=True)
class ToolSpec:
    name: str
    schema: dict[str, Any]


@dataclass(slots=True)
class Prompt:
    last_user_text: str = ""
    # Characters of all text the model reads (messages, system, tool schemas).
    input_chars: int = 0
    images: list[ImageRef] = field(default_factory=list)
    # Content of the tool result(s) when the conversation's last turn is one.
    tool_result: str | None = None
    # Tools the model may call now, after applying the request's tool choice.
    tools: list[ToolSpec] = field(default_factory=list)
    allow_parallel_tools: bool = True
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    max_tokens: int | None = None

    def add_text(self, text: str) -> None:
        self.input_chars += len(text)


@dataclass(slots=True)
class ToolCall:
    # Hex key derived from the conversation; providers add their own id prefix.
    key: str
    name: str
    arguments: dict[str, Any]
    arguments_json: str


@dataclass(slots=True)
class Reply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 1
    completion_tokens: int = 1
    hit_max_tokens: bool = False


def reply_to(prompt: Prompt, answer_tokens: int, max_tokens_overrun: int = 0) -> Reply:
    prompt_tokens = estimate_tokens(prompt.input_chars) + IMAGE_PROMPT_TOKENS * len(prompt.images)
    if prompt.tools and prompt.tool_result is None:
        calls = _tool_calls(prompt)
        produced = sum(len(call.name) + len(call.arguments_json) for call in calls)
        return Reply(
            tool_calls=calls,
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(produced),
        )
    if prompt.json_schema is not None or prompt.json_object:
        text = _json_text(prompt)
        return Reply(
            text=text, prompt_tokens=prompt_tokens, completion_tokens=estimate_tokens(len(text))
        )
    text = _answer_text(prompt, answer_tokens)
    hit_max_tokens = False
    limit = None if prompt.max_tokens is None else prompt.max_tokens + max_tokens_overrun
    if limit is not None and estimate_tokens(len(text)) > limit:
        text = text[: max(1, limit) * 4]
        hit_max_tokens = True
    return Reply(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=estimate_tokens(len(text)),
        hit_max_tokens=hit_max_tokens,
    )


def _answer_text(prompt: Prompt, answer_tokens: int) -> str:
    seed = prompt.last_user_text if prompt.tool_result is None else prompt.tool_result
    if prompt.tool_result is not None:
        head = f"Tool result received: {_snippet(prompt.tool_result, 300)}."
    else:
        head = (
            f'Sandbox answer to "{_snippet(prompt.last_user_text, 60)}" '
            f"(ref {short_hash(prompt.last_user_text)})."
        )
    lines = [head]
    lines.extend(image.describe(number) for number, image in enumerate(prompt.images, start=1))
    used = estimate_tokens(sum(len(line) + 1 for line in lines))
    lines.append(filler(seed, max(1, answer_tokens - used)) + ".")
    return "\n".join(lines)


def _json_text(prompt: Prompt) -> str:
    seed = prompt.tool_result or prompt.last_user_text
    if prompt.json_schema is not None:
        value = instance_for(prompt.json_schema, seed)
    else:
        value = {"answer": _snippet(seed, 60), "ref": short_hash(seed)}
    return orjson.dumps(value).decode()


def _tool_calls(prompt: Prompt) -> list[ToolCall]:
    wants_two = (
        prompt.allow_parallel_tools
        and len(prompt.tools) >= 2
        and "parallel" in prompt.last_user_text.lower()
    )
    chosen = prompt.tools[:2] if wants_two else prompt.tools[:1]
    calls = []
    for position, tool in enumerate(chosen):
        seed = f"{tool.name}|{prompt.last_user_text}"
        arguments = instance_for(tool.schema, seed)
        if not isinstance(arguments, dict):
            arguments = {}
        calls.append(
            ToolCall(
                key=short_hash(f"{seed}|{position}", 12),
                name=tool.name,
                arguments=arguments,
                arguments_json=orjson.dumps(arguments).decode(),
            )
        )
    return calls


def _snippet(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
