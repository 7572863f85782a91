"""Observability for keel: Prometheus metrics, OpenTelemetry tracing, structlog JSON logs.

Library code reports through small hooks (:class:`ResilienceListener`) and the
OpenTelemetry *API*, so the leaf packages never depend on a metrics backend or
a tracing SDK; :class:`PrometheusListener` and :class:`HttpMetrics` turn the
reports into ``prometheus-client`` series, :func:`setup_tracing` installs an
SDK when the application wants spans exported, and :func:`setup` configures
logs, tracing and metrics in one call. The store, sessions, probes,
balancers and scheduler report to :func:`store_metrics` and
:func:`component_metrics` (on by default, cheap) and record spans through
``keel.observe.spans`` (free until an SDK is installed). See
``docs/observability.md``.
"""

from keel.observe._setup import setup
from keel.observe.capability_metrics import CapabilityMetrics, capability_metrics
from keel.observe.component_metrics import ComponentMetrics, component_metrics
from keel.observe.config_metrics import ConfigMetrics, config_metrics
from keel.observe.http_metrics import HttpMetrics, http_metrics
from keel.observe.logs import add_trace_ids, setup_logging
from keel.observe.metrics import (
    PrometheusListener,
    ResilienceListener,
    default_listener,
    events_listener,
)
from keel.observe.spans import sample_store_spans, use_tracer_provider
from keel.observe.store_metrics import StoreMetrics, store_metrics
from keel.observe.tracing import current_ids, extract, inject, setup_tracing, tracer

__all__ = [
    "CapabilityMetrics",
    "ComponentMetrics",
    "ConfigMetrics",
    "HttpMetrics",
    "PrometheusListener",
    "ResilienceListener",
    "StoreMetrics",
    "add_trace_ids",
    "capability_metrics",
    "component_metrics",
    "config_metrics",
    "current_ids",
    "default_listener",
    "events_listener",
    "extract",
    "http_metrics",
    "inject",
    "sample_store_spans",
    "setup",
    "setup_logging",
    "setup_tracing",
    "store_metrics",
    "tracer",
    "use_tracer_provider",
]
