"""Observability for keel: Prometheus metrics, OpenTelemetry tracing, structlog JSON logs.

Library code reports through small hooks (:class:`ResilienceListener`) and the
OpenTelemetry *API*, so the leaf packages never depend on a metrics backend or
a tracing SDK; :class:`PrometheusListener` and :class:`HttpMetrics` turn the
reports into ``prometheus-client`` series, :func:`setup_tracing` installs an
SDK when the application wants spans exported, and :func:`setup` configures
logs, tracing and metrics in one call. See ``docs/observability.md``.
"""

from keel.observe._setup import setup
from keel.observe.capability_metrics import CapabilityMetrics, capability_metrics
from keel.observe.config_metrics import ConfigMetrics, config_metrics
from keel.observe.http_metrics import HttpMetrics, http_metrics
from keel.observe.logs import add_trace_ids, setup_logging
from keel.observe.metrics import (
    PrometheusListener,
    ResilienceListener,
    default_listener,
)
from keel.observe.tracing import current_ids, extract, inject, setup_tracing, tracer

__all__ = [
    "CapabilityMetrics",
    "ConfigMetrics",
    "HttpMetrics",
    "PrometheusListener",
    "ResilienceListener",
    "add_trace_ids",
    "capability_metrics",
    "config_metrics",
    "current_ids",
    "default_listener",
    "extract",
    "http_metrics",
    "inject",
    "setup",
    "setup_logging",
    "setup_tracing",
    "tracer",
]
