"""OpenTelemetry traces: one trace per call, edge → router → Kafka → billing.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
and then exported over OTLP/HTTP (protobuf) by a batch processor in a background thread.
Every other standard variable is the SDK's own: `OTEL_SERVICE_NAME` (default `aig-<service>`),
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`),
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED=true`
turns it off again.

Off means near-free: no SDK tracer provider is installed, `span()` hands back one shared
no-op context manager (a global read and a call), and `outgoing_traceparent()` passes the
caller's header through unchanged.

The context crosses processes in W3C Trace Context form: the `traceparent` field of the gRPC
`CallContext` (edge → router) and `traceparent`/`tracestate` Kafka record headers (router →
billing, edge → jobs), which the publisher's journal and spool keep with the record.

Spans carry ids, names, counts and statuses only. Never prompt text, keys or secrets: no
request or response body is read, exception messages are not recorded (only their type), and
URLs are reduced to their route template.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

log = logging.getLogger("aig.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACE_HEADERS = ("traceparent", "tracestate")

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()
_tracer: trace.Tracer | None = None

__all__ = [
    "Context",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "context_from_headers",
    "context_from_traceparent",
    "enabled",
    "kafka_headers",
    "outgoing_traceparent",
    "record_consumed",
    "remote_span",
    "set_attributes",
    "setup_from_env",
    "span",
]


def setup_from_env(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Installs the SDK's tracer provider when an OTLP endpoint is configured; returns
    whether tracing is on. Call once, at the start of a service's main."""
    global _tracer
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if not any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        return False
    # Imported only when on: an untraced service never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME", "").strip() or f"aig-{service}"
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG); the exporter reads its endpoint,
    # headers, timeout and compression from the OTEL_EXPORTER_OTLP_* variables itself.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("aig")
    log.info("tracing on: OTLP/HTTP export as %s", name)
    return True


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (`None` inside when tracing is off). `parent`
    defaults to the current span. An exception marks it failed with its type only: exception
    messages may quote what the client sent."""
    if _tracer is None:
        return _NOOP
    return _recording(_tracer, name, parent, kind, attributes)


def record_consumed(
    name: str,
    topic: str,
    headers: Mapping[str, str],
    started_ns: int,
    attributes: Mapping[str, Any],
) -> None:
    """A finished CONSUMER span, from `started_ns` to now, for work done on one Kafka record,
    in the trace its producer put in the record's headers (nothing without them)."""
    if _tracer is None:
        return
    parent = context_from_headers(headers.items())
    if parent is None:
        return
    span = _tracer.start_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
        start_time=started_ns,
    )
    span.set_attributes(attributes)
    span.end()


def remote_span(
    name: str, traceparent: str, *, kind: SpanKind = SpanKind.SERVER
) -> contextlib.AbstractContextManager[Span | None]:
    """A span continuing the trace a received `traceparent` names (a new trace without one).
    The header is parsed only when tracing is on."""
    if _tracer is None:
        return _NOOP
    return _recording(_tracer, name, context_from_traceparent(traceparent), kind, None)


@contextlib.contextmanager
def _recording(
    tracer: trace.Tracer,
    name: str,
    parent: Context | None,
    kind: SpanKind,
    attributes: Attributes,
) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR))
            current.set_attribute("error.type", type(exc).__qualname__)
            raise


def context_from_traceparent(traceparent: str, tracestate: str = "") -> Context | None:
    """The remote parent a W3C `traceparent` names (None when empty or malformed)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _valid(_PROPAGATOR.extract(carrier))


def context_from_headers(headers: Iterable[tuple[str, bytes | str]]) -> Context | None:
    """The remote parent in message headers (Kafka's `(name, bytes)` pairs, or decoded)."""
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in TRACE_HEADERS:
            carrier[name] = value.decode("latin-1") if isinstance(value, bytes) else value
    return _valid(_PROPAGATOR.extract(carrier)) if "traceparent" in carrier else None


def _valid(context: Context) -> Context | None:
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _current_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def outgoing_traceparent(received: str = "") -> str:
    """The `traceparent` to send on: the current span's when tracing is on, else the one this
    call arrived with (so a traced service further on still joins the caller's trace)."""
    if _tracer is None:
        return received
    return _current_carrier().get("traceparent", received)


def kafka_headers(received_traceparent: str = "") -> list[tuple[str, bytes]]:
    """W3C trace context headers for a Kafka record published in the current span."""
    if _tracer is not None:
        carrier = _current_carrier()
        if carrier:
            return [(name, value.encode()) for name, value in carrier.items()]
    return [("traceparent", received_traceparent.encode())] if received_traceparent else []


def set_attributes(current: Span | None, attributes: Mapping[str, Any]) -> None:
    """Sets attributes on a span that may be the no-op `None`."""
    if current is not None:
        current.set_attributes(attributes)
