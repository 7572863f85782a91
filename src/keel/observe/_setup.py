"""``keel.observe.setup()``: logs, tracing and metrics configured in one call."""

from __future__ import annotations

from typing import TextIO

from opentelemetry import trace

from keel.observe._http_metrics import HttpMetrics, http_metrics
from keel.observe.logs import setup_logging
from keel.observe.tracing import setup_tracing

__all__ = ["setup"]


def setup(
    service: str,
    *,
    instance: str = "",
    level: str = "INFO",
    json_logs: bool = True,
    otlp_endpoint: str | None = None,
    stream: TextIO | None = None,
) -> HttpMetrics:
    """Configure observability for a process: JSON logs, tracing when asked, metrics.

    Args:
        service: the service name, on every log line and as ``service.name``.
        instance: the instance id, on every log line.
        level: log level.
        json_logs: JSON lines (False: human-readable console lines).
        otlp_endpoint: when given, export spans there over OTLP/HTTP; else
            tracing stays whatever the process configured (a no-op by default).
        stream: where log lines go (default: stderr).

    Returns:
        the process-wide HTTP metrics (served on ``/metrics`` by a Service).

    Raises:
        ValidationError: a bad level, or the OTLP exporter package is missing.
    """
    setup_logging(service=service, instance=instance, level=level, json=json_logs, stream=stream)
    if otlp_endpoint is not None and not isinstance(
        trace.get_tracer_provider(), _sdk_provider_type()
    ):
        setup_tracing(
            service, otlp_endpoint=otlp_endpoint, resource={"service.instance.id": instance}
        )
    return http_metrics()


def _sdk_provider_type() -> type:
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return type(None)
    return TracerProvider
