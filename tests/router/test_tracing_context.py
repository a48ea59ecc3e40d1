"""aig_common.tracing: off by default and inert; on, the W3C context crosses gRPC's
CallContext and Kafka headers (through the publisher's journal) intact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from aig_common import tracing
from aig_common.events import Journal, Record, decode_records

CLIENT_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, without touching the process-wide tracer provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_off_without_an_endpoint_and_then_inert() -> None:
    assert not tracing.setup_from_env("edge", {"OTEL_SERVICE_NAME": "x"})
    assert not tracing.setup_from_env(
        "edge", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.enabled()
    with tracing.span("anything") as span:
        assert span is None
    with tracing.remote_span("anything", CLIENT_TRACEPARENT) as span:
        assert span is None
    # What arrived is passed on untouched, so a traced service further on joins the trace.
    assert tracing.outgoing_traceparent(CLIENT_TRACEPARENT) == CLIENT_TRACEPARENT
    assert tracing.kafka_headers(CLIENT_TRACEPARENT) == [
        ("traceparent", CLIENT_TRACEPARENT.encode())
    ]
    assert tracing.kafka_headers() == []
    tracing.record_consumed("x", "topic", {"traceparent": CLIENT_TRACEPARENT}, 0, {})


def test_malformed_or_missing_context_starts_no_remote_parent() -> None:
    assert tracing.context_from_traceparent("") is None
    assert tracing.context_from_traceparent("00-not-a-trace-01") is None
    assert tracing.context_from_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
    assert tracing.context_from_headers([("other", b"x")]) is None


def test_context_crosses_grpc_then_kafka_through_the_journal(
    exported: InMemorySpanExporter, tmp_path: Path
) -> None:
    # edge: continues the client's trace, and hands its own span to the router.
    with tracing.remote_span("edge", CLIENT_TRACEPARENT) as edge:
        assert edge is not None
        sent = tracing.outgoing_traceparent(CLIENT_TRACEPARENT)
    assert sent.split("-")[1] == CLIENT_TRACEPARENT.split("-")[1]
    assert sent.split("-")[2] == format(edge.get_span_context().span_id, "016x")

    # router: a child of the edge's span; publishes with its own context in the headers.
    with tracing.remote_span("router", sent) as router:
        headers = tracing.kafka_headers(sent)
    journal = Journal(tmp_path, "router")
    journal.write(Record("aig.usage.v1", b"acct", b"event", tuple(headers)))
    journal.close()  # the process dies before the broker confirmed the record

    # the next process finds the segment and resends its records, headers and all.
    (leftover,) = Journal(tmp_path, "router").leftovers()
    (record,) = decode_records(leftover.read_bytes())
    received = {name: value.decode() for name, value in record.headers}
    tracing.record_consumed("billing settle", record.topic, received, time.time_ns(), {})

    spans = {span.name: span for span in exported.get_finished_spans()}
    assert set(spans) == {"edge", "router", "billing settle"}
    trace_ids = {span.context.trace_id for span in spans.values()}
    assert trace_ids == {int(CLIENT_TRACEPARENT.split("-")[1], 16)}
    assert router is not None
    assert spans["router"].parent is not None
    assert spans["router"].parent.span_id == edge.get_span_context().span_id
    assert spans["billing settle"].parent is not None
    assert spans["billing settle"].parent.span_id == router.get_span_context().span_id


def test_a_failure_is_recorded_by_type_never_by_message(exported: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("call"):
        raise ValueError("Invalid value in messages[0]: 'my secret prompt'")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert not span.status.description
    assert span.attributes is not None and span.attributes["error.type"] == "ValueError"
    assert not span.events  # no exception event, whose message would quote the input
