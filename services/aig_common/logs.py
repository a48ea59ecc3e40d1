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

import logging
import os
import sys
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


def configure(service: str, environ: Mapping[str, str] | None = None) -> str:
    """Installs the root handler on stderr for `service`; returns the format in use. Call
    first thing in a service's main. Libraries' loggers (uvicorn's included, when it is run
    with `log_config=None`) propagate to it, so every line has one shape."""
    env = os.environ if environ is None else environ
    chosen = env.get("AIG_LOG_FORMAT", "text").strip().lower() or "text"
    if chosen not in FORMATS:
        raise ValueError(f"AIG_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {chosen!r}")
    level = env.get("AIG_LOG_LEVEL", "INFO").strip().upper() or "INFO"
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
