"""Observability for keel: Prometheus metrics (tracing and logs come later).

Library code reports through small hooks (:class:`ResilienceListener`) so the
leaf packages never depend on a metrics backend; :class:`PrometheusListener`
is the hook that turns those reports into ``prometheus-client`` series.
"""

from keel.observe.config_metrics import ConfigMetrics, config_metrics
from keel.observe.metrics import (
    PrometheusListener,
    ResilienceListener,
    default_listener,
)

__all__ = [
    "ConfigMetrics",
    "PrometheusListener",
    "ResilienceListener",
    "config_metrics",
    "default_listener",
]
