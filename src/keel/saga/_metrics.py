"""Prometheus series of sagas (labels: the saga's name and the outcome only).

- ``keel_saga_running{saga}``: sagas this process drives now;
- ``keel_saga_outcomes_total{saga,outcome}``: committed, compensated, failed;
- ``keel_saga_step_seconds{saga}``: one action or compensation try, start to end.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SagaMetrics", "saga_metrics"]

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class SagaMetrics:
    """The saga series on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.running = Gauge(
            "keel_saga_running", "Sagas driven by this process.", ("saga",), registry=r
        )
        self.outcomes = Counter(
            "keel_saga_outcomes", "Sagas ended, by outcome.", ("saga", "outcome"), registry=r
        )
        self.step_seconds = Histogram(
            "keel_saga_step_seconds",
            "One try of a step's action or compensation.",
            ("saga",),
            buckets=_BUCKETS,
            registry=r,
        )


_default: SagaMetrics | None = None


def saga_metrics() -> SagaMetrics:
    """The process-wide saga series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = SagaMetrics(REGISTRY)
    return _default
