"""Observability helpers: JSON logs with trace ids, tracing setup, bounded route labels."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keel.errors import ValidationError
from keel.observe import HttpMetrics, current_ids, extract, inject, setup_logging, setup_tracing


@pytest.fixture
def restore_logging() -> None:
    """Put the root logger and structlog back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_logs_carry_ids_and_trace(restore_logging: None) -> None:
    """structlog and stdlib lines are JSON with service, instance, trace_id and span_id."""
    out = io.StringIO()
    setup_logging(service="orders", instance="10.0.0.1:80", stream=out)
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        structlog.get_logger("app").info("order placed", order=7)
        logging.getLogger("keel.test").warning("plain %s", "stdlib")
        ids = (format(span.get_span_context().trace_id, "032x"),)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["order placed", "plain stdlib"]
    for line in lines:
        assert line["service"] == "orders" and line["instance"] == "10.0.0.1:80"
        assert line["trace_id"] == ids[0] and len(line["span_id"]) == 16
    assert lines[0]["order"] == 7 and lines[1]["level"] == "warning"


def test_setup_logging_refuses_unknown_level(restore_logging: None) -> None:
    """A bad level names the choices."""
    with pytest.raises(ValidationError, match="DEBUG"):
        setup_logging(level="LOUD")


def test_setup_tracing_needs_a_destination() -> None:
    """setup_tracing without an endpoint or exporter says what to pass."""
    with pytest.raises(ValidationError, match="otlp_endpoint"):
        setup_tracing("orders")


def test_setup_tracing_with_exporter_records_spans() -> None:
    """An exporter gets the spans of the returned provider (not installed globally here)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = setup_tracing("orders", exporter=exporter, set_global=False)
    with provider.get_tracer("t").start_as_current_span("x"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "orders"


def test_trace_context_round_trips_through_headers() -> None:
    """inject() writes traceparent for the current span; extract() reads it back."""
    provider = TracerProvider()
    assert current_ids() is None
    with provider.get_tracer("t").start_as_current_span("x") as span:
        headers: dict[str, str] = {}
        inject(headers)
        ids = current_ids()
    assert ids is not None and headers["traceparent"].split("-")[1] == ids[0]
    context = extract([(b"traceparent", headers["traceparent"].encode())])
    remote = trace.get_current_span(context).get_span_context()
    assert remote.span_id == span.get_span_context().span_id


def test_route_labels_are_bounded() -> None:
    """Past max_routes distinct raw paths, new paths are labelled 'other'."""
    metrics = HttpMetrics(CollectorRegistry(), max_routes=2)
    assert metrics.route_label(None, "/a") == "/a"
    assert metrics.route_label(None, "/b") == "/b"
    assert metrics.route_label(None, "/c") == "other"
    assert metrics.route_label("/items/{id}", "/items/9") == "/items/{id}"
    metrics.served("orders", "GET", "/a", 200, 0.01)
    metrics.called("inventory", "GET", None, 0.02)
    text = generate_latest(metrics.registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"keel_http_server_requests", "keel_http_client_requests"} <= names
