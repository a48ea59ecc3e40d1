"""Logging for every service: plain text for a terminal, or one JSON object per line for a
log pipeline (Kubernetes, Loki, Elasticsearch), chosen by `AIG_LOG_FORMAT`.

`AIG_LOG_FORMAT=json` writes each record as
`{"ts", "level", "service", "logger", "message", "request_id"?, "trace_id"?, "span_id"?,
"exc_type"?, "exc"?}`: `request_id` is the `x-request-id` of the call being served (the edge
sets it per request, the router per RPC from the call context), `trace_id`/`span_id` those of
the current OpenTelemetry span when tracing is on, so a log line leads to its trace.
`AIG_LOG_LEVEL` sets the level (INFO).

What is logged is the services' own business, and they log ids, counts, statuses and
exception types, never bodies, keys or prompt text; this module adds no field that could
carry one (request headers and bodies are not in scope here).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# The x-request-id of the call this task is serving; set where a call enters a service.
current_request_id: ContextVar[str | None] = ContextVar("aig_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id.get()
        if request_id:
            entry["request_id"] = request_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(
    service: str, environ: Mapping[str, str] | None = None, *, relay_native_stderr: bool = False
) -> str:
    """Installs the root handler on stderr for `service`; returns the format in use. Call
    first thing in a service's main. Libraries' loggers (uvicorn's included, when it is run
    with `log_config=None`) propagate to it, so every line has one shape.

    `relay_native_stderr` (the services' mains pass True; it changes the process's fd 2, so
    tests calling this in-process leave it off): in JSON mode, lines that C code writes to
    fd 2 itself are logged as records too; see `_relay_native_stderr`."""
    env = os.environ if environ is None else environ
    chosen = env.get("AIG_LOG_FORMAT", "text").strip().lower() or "text"
    if chosen not in FORMATS:
        raise ValueError(f"AIG_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {chosen!r}")
    level = env.get("AIG_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if chosen == "json" and relay_native_stderr:
        _relay_native_stderr()
    handler = logging.StreamHandler(sys.stderr)
    if chosen == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings would otherwise go to stderr raw, breaking the one-object-per-line.
    logging.captureWarnings(True)
    return chosen


# gRPC's C core writes absl-style lines: a severity letter, then MMDD and the time, e.g.
# `E1204 21:07:31.123456  4242 ev_epoll1_linux.cc:373] ...`.
_NATIVE_SEVERITY = re.compile(r"^([IWEF])\d{4} ")
_NATIVE_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
_native_relay: threading.Thread | None = None


def _relay_native_stderr() -> None:
    """Why: gRPC's C core (and any other C library) writes its own messages straight to fd 2,
    bypassing Python's logging, and one raw line breaks a JSON log pipeline's
    one-object-per-line; silencing them instead (`GRPC_VERBOSITY=NONE`) would hide real
    transport errors from operators. So fd 2 becomes a pipe, and a thread logs each line
    from it as a record of logger `native` at the line's own severity. Python's `sys.stderr`
    (the root handler, tracebacks, faulthandler) keeps the original stream, so a crash
    report never waits on that thread. At exit fd 2 is given back and the pipe drained."""
    global _native_relay
    if _native_relay is not None:
        return
    sys.stderr.flush()
    original = os.dup(2)
    sys.stderr = open(  # noqa: SIM115 - the process's stderr for the rest of its life
        original, "w", buffering=1, encoding="utf-8", errors="backslashreplace"
    )
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _native_relay = threading.Thread(
        target=_relay_lines, args=(read_end,), name="native-stderr", daemon=True
    )
    _native_relay.start()
    atexit.register(_give_back_stderr, original, _native_relay)


def _relay_lines(read_end: int) -> None:
    native = logging.getLogger("native")
    with open(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw.decode("utf-8", errors="backslashreplace").rstrip()
            if not line:
                continue
            severity = _NATIVE_SEVERITY.match(line)
            level = _NATIVE_LEVELS[severity.group(1)] if severity else logging.WARNING
            native.log(level, line)


def _give_back_stderr(original: int, relay: threading.Thread) -> None:
    # Closing the pipe's only write end lets the relay read to EOF, so nothing written
    # before exit is lost; what C code writes after this goes to the stream as it is.
    os.dup2(original, 2)
    relay.join(timeout=2.0)
