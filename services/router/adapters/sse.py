"""Incremental Server-Sent Events decoding for upstream streams.

Upstream bytes arrive in arbitrary pieces: a multi-byte UTF-8 character, a CRLF pair or an
event can be split across reads, so the decoder keeps what it has not finished yet.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Turns bytes into events: lines end in CR, LF or CRLF; a blank line ends an event.

    Lines that are not SSE fields (Gemini's raw JSON error bodies) are kept aside; read them
    with `take_stray_lines()`.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._event: str | None = None
        self._data: list[str] = []
        self._stray: list[str] = []

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        self._pending += self._utf8.decode(data)
        return self._drain_lines(final=False)

    def flush(self) -> list[ServerSentEvent]:
        """Call when the stream ends: an unterminated last event is still delivered."""
        self._pending += self._utf8.decode(b"", final=True)
        events = self._drain_lines(final=True)
        if self._pending:
            events.extend(self._take_line(self._pending))
            self._pending = ""
        events.extend(self._dispatch())
        return events

    def take_stray_lines(self) -> list[str]:
        lines, self._stray = self._stray, []
        return lines

    def _drain_lines(self, *, final: bool) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        text = self._pending
        start = 0
        while True:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr == len(text) - 1 and not final:
                    break  # the LF of a CRLF may be in the next read
                end, next_start = cr, cr + 2 if text.startswith("\n", cr + 1) else cr + 1
            else:
                end, next_start = lf, lf + 1
            events.extend(self._take_line(text[start:end]))
            start = next_start
        self._pending = text[start:]
        return events

    def _take_line(self, line: str) -> list[ServerSentEvent]:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return []  # comment, e.g. ": keepalive" or ": OPENROUTER PROCESSING"
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry"):
            self._stray.append(line)
        return []

    def _dispatch(self) -> list[ServerSentEvent]:
        # Per the SSE spec an event with no data line is dropped (never JSON-parse "").
        event, data = self._event, self._data
        self._event, self._data = None, []
        if not data:
            return []
        return [ServerSentEvent(event=event, data="\n".join(data))]


class RawJSONErrorScanner:
    """Finds a JSON error object that arrives in a stream without `data:` framing.

    Gemini can answer a streaming request with a plain (often pretty-printed, sometimes
    array-wrapped) JSON error body. Feed it the decoder's stray lines; once the brackets
    balance, `feed` returns the parsed object if it carries an "error" key.
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, lines: list[str]) -> dict[str, Any] | None:
        for line in lines:
            if not self._text and not line.lstrip().startswith(("{", "[")):
                continue
            self._text.append(line)
            self._track_depth(line)
            if self._depth == 0:
                found = self._parse("\n".join(self._text))
                self._text = []
                if found is not None:
                    return found
        return None

    def _track_depth(self, line: str) -> None:
        for char in line:
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1

    @staticmethod
    def _parse(text: str) -> dict[str, Any] | None:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict) and value.get("error"):
            return value
        return None
