"""Chat completions (and their chunk streams) turned back into OpenAI Responses objects.

Pure, no I/O. `ResponseShell` holds what every `response` object of one call repeats
(id, model, the request's echoed settings); `response_from_completion` builds the finished
object from a chat completion, and `ResponseEvents` turns a chat chunk stream into the
Responses SSE event sequence (`response.created` … `response.completed`), numbering each
event with `sequence_number` and keeping the finished response for storage.

A call the provider answered in the Responses API itself (passed through to OpenAI) needs
no translation, only aig's identity: `native_response` and `NativeEvents` put the shell's
response id and item ids (the ones the translation would have made), the public model and
the request's own `store` / `previous_response_id` on the provider's objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .request import Item, ResponsesRequest, new_id

RESPONSE_PREFIX = "resp"
# Chat finish reasons that leave a response `incomplete`, and the reason Responses gives.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True, slots=True)
class ResponseShell:
    """The parts of a `response` object fixed before the first token."""

    id: str
    created_at: int
    model: str
    request: ResponsesRequest

    @classmethod
    def new(cls, request: ResponsesRequest, model: str) -> ResponseShell:
        return cls(new_id(RESPONSE_PREFIX), int(time.time()), model, request)

    def item_id(self, prefix: str, output_index: int) -> str:
        """An output item's id names its response (`msg_<response hex>_<index>`), so an
        `item_reference` to it finds the stored response without an index of its own."""
        return f"{prefix}_{self.id.removeprefix(RESPONSE_PREFIX + '_')}_{output_index}"

    def render(
        self,
        status: str,
        output: list[Item],
        usage: Item | None = None,
        *,
        incomplete_reason: str | None = None,
        error: Item | None = None,
    ) -> Item:
        request = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": (
                {"reason": incomplete_reason} if incomplete_reason is not None else None
            ),
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "reasoning": {"effort": request.reasoning_effort, "summary": None},
            "store": request.store,
            "temperature": request.temperature,
            "text": {"format": request.text_format},
            "tool_choice": request.tool_choice,
            "tools": request.tools,
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": request.metadata,
        }


def response_id_of_item(item_id: str) -> str | None:
    """The response an output item id (`ResponseShell.item_id`) belongs to, if it is one."""
    parts = item_id.split("_")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return f"{RESPONSE_PREFIX}_{parts[1]}"


def responses_usage(chat_usage: Item | None) -> Item | None:
    """Chat's `usage` in Responses' names; the token counts are the same numbers."""
    if not chat_usage:
        return None
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    input_tokens = int(chat_usage.get("prompt_tokens") or 0)
    output_tokens = int(chat_usage.get("completion_tokens") or 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0)},
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(chat_usage.get("total_tokens") or input_tokens + output_tokens),
    }


def _text_part(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, parts: list[Item], status: str) -> Item:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Item:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _status(finish_reason: str | None) -> tuple[str, str | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    return ("incomplete", reason) if reason else ("completed", None)


def response_from_completion(shell: ResponseShell, completion: Item) -> Item:
    """The finished `response` object for one chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    status, reason = _status(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[Item] = []
    parts: list[Item] = []
    if message.get("content"):
        parts.append(_text_part(message["content"]))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    tool_calls = message.get("tool_calls") or []
    if parts or not tool_calls:
        output.append(
            _message_item(shell.item_id("msg", 0), parts or [_text_part("")], item_status)
        )
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            _function_call_item(
                shell.item_id("fc", len(output)),
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "",
                "completed",
            )
        )
    return shell.render(
        status, output, responses_usage(completion.get("usage")), incomplete_reason=reason
    )


@dataclass(slots=True)
class _OpenText:
    output_index: int
    item_id: str
    text: str = ""


@dataclass(slots=True)
class _OpenCall:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class ResponseEvents:
    """Chat chunks in, Responses stream events out (each a dict with its `type`).

    `start()` first, then `feed(chunk)` for every chat.completion.chunk, then `finish()`
    (or `fail(...)`). Items are closed in output order: a text message when the first
    tool call starts, every call at the end. `final` holds the finished response.
    """

    shell: ResponseShell
    _sequence: int = 0
    _output: list[Item] = field(default_factory=list)
    _text: _OpenText | None = None
    _calls: dict[int, _OpenCall] = field(default_factory=dict)
    _finish_reason: str | None = None
    _usage: Item | None = None
    final: Item | None = None

    def _event(self, kind: str, **fields: Any) -> Item:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[Item]:
        shell = self.shell.render("in_progress", [])
        return [
            self._event("response.created", response=shell),
            self._event("response.in_progress", response=shell),
        ]

    def feed(self, chunk: Item) -> list[Item]:
        events: list[Item] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events.extend(self._text_delta(text))
            for call in delta.get("tool_calls") or []:
                events.extend(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[Item]:
        events: list[Item] = []
        if self._text is None:
            index = len(self._output)
            self._text = _OpenText(index, self.shell.item_id("msg", index))
            item = _message_item(self._text.item_id, [], "in_progress")
            self._output.append(item)
            events.append(
                self._event(
                    "response.output_item.added", output_index=self._text.output_index, item=item
                )
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._text.item_id,
                    output_index=self._text.output_index,
                    content_index=0,
                    part=_text_part(""),
                )
            )
        self._text.text += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._text.item_id,
                output_index=self._text.output_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, delta: Item) -> list[Item]:
        events: list[Item] = []
        index = int(delta.get("index") or 0)
        function = delta.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            events.extend(self._close_text("completed"))
            call = _OpenCall(
                len(self._output),
                self.shell.item_id("fc", len(self._output)),
                delta.get("id") or new_id("call"),
                function.get("name") or "",
            )
            self._calls[index] = call
            item = _function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
            self._output.append(item)
            events.append(
                self._event("response.output_item.added", output_index=call.output_index, item=item)
            )
        fragment = function.get("arguments") or ""
        if fragment:
            call.arguments += fragment
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=fragment,
                )
            )
        return events

    def _close_text(self, status: str) -> list[Item]:
        open_text, self._text = self._text, None
        if open_text is None:
            return []
        part = _text_part(open_text.text)
        item = _message_item(open_text.item_id, [part], status)
        self._output[open_text.output_index] = item
        where = {"item_id": open_text.item_id, "output_index": open_text.output_index}
        return [
            self._event(
                "response.output_text.done",
                **where,
                content_index=0,
                text=open_text.text,
                logprobs=[],
            ),
            self._event("response.content_part.done", **where, content_index=0, part=part),
            self._event(
                "response.output_item.done", output_index=open_text.output_index, item=item
            ),
        ]

    def _close_calls(self) -> list[Item]:
        events: list[Item] = []
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            item = _function_call_item(
                call.item_id, call.call_id, call.name, call.arguments, "completed"
            )
            self._output[call.output_index] = item
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    name=call.name,
                    arguments=call.arguments,
                )
            )
            events.append(
                self._event("response.output_item.done", output_index=call.output_index, item=item)
            )
        self._calls.clear()
        return events

    def finish(self, fallback_usage: Item | None = None) -> list[Item]:
        """Closes every open item and ends with `response.completed` (or `.incomplete`).
        `fallback_usage` (chat-shaped) counts when no chunk carried usage."""
        status, reason = _status(self._finish_reason)
        events = self._close_text("incomplete" if status == "incomplete" else "completed")
        events.extend(self._close_calls())
        usage = responses_usage(self._usage or fallback_usage)
        self.final = self.shell.render(status, list(self._output), usage, incomplete_reason=reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.final))
        return events

    def fail(self, code: str, message: str) -> list[Item]:
        """The stream broke after it started: an `error` event, then `response.failed`."""
        failed = self.shell.render(
            "failed", list(self._output), error={"code": code, "message": message}
        )
        return [
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=failed),
        ]


# --- answers the provider gave in the Responses API itself ------------------------------

# Item id prefixes by type, for an item the provider sent without an id.
_ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "reasoning": "rs"}


def _prefix(upstream_id: Any, kind: Any) -> str:
    if isinstance(upstream_id, str) and "_" in upstream_id:
        return upstream_id.split("_", 1)[0]
    return _ITEM_PREFIXES.get(kind, "item") if isinstance(kind, str) else "item"


def native_item(shell: ResponseShell, output_index: int, item: Item) -> Item:
    """A provider's output item under the id aig gives the item at that index."""
    prefix = _prefix(item.get("id"), item.get("type"))
    return {**item, "id": shell.item_id(prefix, output_index)}


def native_response(shell: ResponseShell, response: Item) -> Item:
    """A provider's `response` object as aig's: its id, item ids and public model, and
    the request's own settings where aig sent the provider others (`native_body`)."""
    request = shell.request
    return {
        **response,
        "id": shell.id,
        "model": shell.model,
        "output": [
            native_item(shell, index, item)
            for index, item in enumerate(response.get("output") or [])
        ],
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "max_output_tokens": request.max_output_tokens,
    }


@dataclass(slots=True)
class NativeEvents:
    """The provider's Responses stream events, each given aig's ids (`native_response`),
    in the provider's order and numbering. `final` holds the finished response (from
    `response.completed` or `.incomplete`); `fail` ends a stream the provider broke off."""

    shell: ResponseShell
    _next_sequence: int = 0
    _done_items: dict[int, Item] = field(default_factory=dict)
    final: Item | None = None

    def feed(self, event: Item) -> list[Item]:
        event = dict(event)
        kind = event.get("type")
        index = event.get("output_index")
        if isinstance(event.get("response"), dict):
            event["response"] = native_response(self.shell, event["response"])
        if isinstance(index, int):
            if isinstance(event.get("item"), dict):
                event["item"] = native_item(self.shell, index, event["item"])
                if kind == "response.output_item.done":
                    self._done_items[index] = event["item"]
            if isinstance(event.get("item_id"), str):
                event["item_id"] = self.shell.item_id(_prefix(event["item_id"], None), index)
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            self._next_sequence = sequence + 1
        else:
            event["sequence_number"] = self._next_sequence
            self._next_sequence += 1
        if kind in ("response.completed", "response.incomplete"):
            self.final = event["response"]
        return [event]

    def fail(self, code: str, message: str) -> list[Item]:
        """As `ResponseEvents.fail`, numbered on from the provider's last event."""
        output = [self._done_items[index] for index in sorted(self._done_items)]
        failed = self.shell.render("failed", output, error={"code": code, "message": message})
        sequence = self._next_sequence
        self._next_sequence += 2
        return [
            {
                "type": "error",
                "sequence_number": sequence,
                "code": code,
                "message": message,
                "param": None,
            },
            {"type": "response.failed", "sequence_number": sequence + 1, "response": failed},
        ]
