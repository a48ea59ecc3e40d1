from __future__ import annotations

import pytest

from router.adapters.sse import RawJSONErrorScanner, ServerSentEvent, SSEDecoder


def decode_in_pieces(raw: bytes, size: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for start in range(0, len(raw), size):
        events.extend(decoder.feed(raw[start : start + size]))
    events.extend(decoder.flush())
    return events


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_any_line_ending_and_any_split(newline: bytes, size: int) -> None:
    raw = (
        b'event: message_start\ndata: {"a": 1}\n\n'
        b": keepalive\n\n"
        b"data: line one\ndata: line two\n\n"
        b"data: caf\xc3\xa9\n\n"
    ).replace(b"\n", newline)
    assert decode_in_pieces(raw, size) == [
        ServerSentEvent(event="message_start", data='{"a": 1}'),
        ServerSentEvent(event=None, data="line one\nline two"),
        ServerSentEvent(event=None, data="café"),
    ]


def test_event_without_data_is_dropped_and_event_name_resets() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"event: ping\n\nid: 7\nretry: 10\n\ndata: x\n\n")
    assert events == [ServerSentEvent(event=None, data="x")]


def test_value_keeps_all_but_one_leading_space_and_field_without_colon() -> None:
    events = SSEDecoder().feed(b"data:  two\ndata\n\n")
    assert events == [ServerSentEvent(event=None, data=" two\n")]


def test_flush_delivers_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"done": true}') == []
    assert decoder.flush() == [ServerSentEvent(event=None, data='{"done": true}')]


def test_cr_at_end_of_a_read_is_not_a_blank_line_before_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [ServerSentEvent(event=None, data="a\nb")]


def test_raw_gemini_error_body_is_found_in_stray_lines() -> None:
    raw = (
        b'data: {"candidates": []}\n\n'
        b"[{\n"
        b'  "error": {\n'
        b'    "code": 503,\n'
        b'    "message": "The model is overloaded. {retry}",\n'
        b'    "status": "UNAVAILABLE"\n'
        b"  }\n"
        b"}\n"
        b"]\n"
    )
    decoder = SSEDecoder()
    scanner = RawJSONErrorScanner()
    found = None
    for start in range(0, len(raw), 7):
        decoder.feed(raw[start : start + 7])
        found = found or scanner.feed(decoder.take_stray_lines())
    decoder.flush()
    found = found or scanner.feed(decoder.take_stray_lines())
    assert found is not None
    assert found["error"]["code"] == 503
    assert found["error"]["message"] == "The model is overloaded. {retry}"


def test_scanner_ignores_stray_text_that_is_not_an_error() -> None:
    scanner = RawJSONErrorScanner()
    assert scanner.feed(["garbage: here", '{"candidates": []}']) is None
