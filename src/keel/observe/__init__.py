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

import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from keel.observe._capability_metrics import CapabilityMetrics, capability_metrics
    from keel.observe._component_metrics import ComponentMetrics, component_metrics
    from keel.observe._config_metrics import ConfigMetrics, config_metrics
    from keel.observe._http_metrics import HttpMetrics, http_metrics
    from keel.observe._setup import setup
    from keel.observe._store_metrics import StoreMetrics, store_metrics
    from keel.observe.logs import add_trace_ids, setup_logging
    from keel.observe.metrics import (
        PrometheusListener,
        ResilienceListener,
        default_listener,
        events_listener,
    )
    from keel.observe.spans import sample_store_spans, use_tracer_provider
    from keel.observe.tracing import current_ids, extract, inject, setup_tracing, tracer

# Loaded on first use: a program (or a CLI command) pays only for the parts
# it touches; the store's counters never import prometheus_client or the
# tracing SDK on their own (see keel.observe._registry).
_LAZY = {
    "CapabilityMetrics": "keel.observe._capability_metrics",
    "ComponentMetrics": "keel.observe._component_metrics",
    "ConfigMetrics": "keel.observe._config_metrics",
    "HttpMetrics": "keel.observe._http_metrics",
    "StoreMetrics": "keel.observe._store_metrics",
    "capability_metrics": "keel.observe._capability_metrics",
    "component_metrics": "keel.observe._component_metrics",
    "config_metrics": "keel.observe._config_metrics",
    "http_metrics": "keel.observe._http_metrics",
    "store_metrics": "keel.observe._store_metrics",
    "PrometheusListener": "keel.observe.metrics",
    "ResilienceListener": "keel.observe.metrics",
    "add_trace_ids": "keel.observe.logs",
    "current_ids": "keel.observe.tracing",
    "default_listener": "keel.observe.metrics",
    "events_listener": "keel.observe.metrics",
    "extract": "keel.observe.tracing",
    "inject": "keel.observe.tracing",
    "sample_store_spans": "keel.observe.spans",
    "setup": "keel.observe._setup",
    "setup_logging": "keel.observe.logs",
    "setup_tracing": "keel.observe.tracing",
    "tracer": "keel.observe.tracing",
    "use_tracer_provider": "keel.observe.spans",
}

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


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keel.observe' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value
