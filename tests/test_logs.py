"""aig_common.logs: the JSON line shape, and the request and trace it points at."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aig_common import logs


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """`configure` replaces the root's handlers (pytest's own among them): put them back."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("router", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_is_one_json_object_with_the_request_and_trace_it_belongs_to() -> None:
    formatter = logs.JsonFormatter("router")
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    token = logs.current_request_id.set("req_abc")
    try:
        with trace.use_span(NonRecordingSpan(context)):
            line = formatter.format(_record("attempt %d failed", 2))
    finally:
        logs.current_request_id.reset(token)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING"
    assert entry["service"] == "router"
    assert entry["logger"] == "router"
    assert entry["message"] == "attempt 2 failed"
    assert entry["request_id"] == "req_abc"
    assert entry["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert entry["span_id"] == "b7ad6b7169203331"
    assert entry["ts"].endswith("+00:00")


def test_outside_a_call_there_is_no_request_or_trace_and_exceptions_are_one_field() -> None:
    try:
        raise KeyError("k")
    except KeyError as caught:
        line = logs.JsonFormatter("billing").format(_record("batch failed", exc=caught))
    entry = json.loads(line)
    assert "request_id" not in entry and "trace_id" not in entry
    assert entry["exc_type"] == "KeyError"
    assert "Traceback" in entry["exc"]


def test_configure_installs_one_handler_in_the_chosen_format(
    root_handlers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.configure("edge", {"AIG_LOG_FORMAT": "json", "AIG_LOG_LEVEL": "warning"}) == "json"
    root = logging.getLogger()
    assert len(root.handlers) == 1 and root.level == logging.WARNING
    # A library's logger that nobody configured (uvicorn's are left alone by the services,
    # which run it with log_config=None) propagates to the one handler.
    logging.getLogger("some.library").warning("from a library")
    logging.getLogger("edge").info("below the level")
    written = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["logger"], e["message"]) for e in written] == [("some.library", "from a library")]
    assert logs.configure("edge", {}) == "text"


def test_an_unknown_format_is_refused(root_handlers: None) -> None:
    with pytest.raises(ValueError, match="AIG_LOG_FORMAT must be one of text, json"):
        logs.configure("edge", {"AIG_LOG_FORMAT": "yaml"})


NATIVE_WRITER = """
import logging, os, sys
import grpc
from aig_common import logs
logs.configure("router", relay_native_stderr=True)
# gRPC's core logs on its first init, straight to fd 2 (at GRPC_VERBOSITY=debug, a warning
# that the level is not for production); then a line as its epoll poller writes them.
grpc.insecure_channel("127.0.0.1:1").close()
os.write(2, b"E1204 21:07:31.123456    4242 ev_epoll1_linux.cc:373] epoll_wait error\\n")
os.write(2, b"no severity prefix\\n")
logging.getLogger("router").warning("from python")
"""


def test_c_code_writing_to_fd_2_is_logged_as_json_lines_at_its_severity() -> None:
    """gRPC's C core bypasses Python's logging; in JSON mode its lines must still be JSON."""
    env = {**os.environ, "AIG_LOG_FORMAT": "json", "GRPC_VERBOSITY": "debug"}
    done = subprocess.run(
        [sys.executable, "-c", NATIVE_WRITER], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]
    by_message = {(e["logger"], e["level"], e["message"].split("] ")[-1]) for e in entries}
    assert ("native", "ERROR", "epoll_wait error") in by_message
    assert ("native", "WARNING", "no severity prefix") in by_message
    assert ("router", "WARNING", "from python") in by_message
    grpc_own = [e for e in entries if e["logger"] == "native" and "log.cc" in e["message"]]
    assert grpc_own and grpc_own[0]["level"] == "WARNING", entries
    assert all(e["service"] == "router" for e in entries)


def test_without_the_relay_c_code_lines_stay_raw() -> None:
    """The relay is what makes the test above pass: text mode leaves fd 2 alone."""
    env = {**os.environ, "AIG_LOG_FORMAT": "text", "GRPC_VERBOSITY": "debug"}
    done = subprocess.run(
        [sys.executable, "-c", NATIVE_WRITER], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert b"\nE1204 21:07:31.123456    4242 ev_epoll1_linux.cc:373] epoll_wait error\n" in (
        b"\n" + done.stderr
    )
