"""Prometheus series of keel.events (labels: topic and group only).

- ``keel_events_published_total{topic}``
- ``keel_events_delivered_total{topic,group}``: handed to a consumer (retries count again)
- ``keel_events_acked_total{topic,group}``
- ``keel_events_retried_total{topic,group}``: failed attempts that will be tried again
- ``keel_events_dead_lettered_total{topic,group}``
- ``keel_events_lag{topic,group}``: undelivered + pending events on the partitions
  this process owns (sum over processes for the group's total)
- ``keel_events_handler_seconds{topic,group}``: hand-out to ack or nack
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EventsMetrics", "events_metrics"]

_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)
_TG = ("topic", "group")


class EventsMetrics:
    """The events series on one registry (default: a new private registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.published = Counter(
            "keel_events_published", "Events published by this process.", ("topic",), registry=r
        )
        self.delivered = Counter(
            "keel_events_delivered", "Events handed to consumers.", _TG, registry=r
        )
        self.acked = Counter("keel_events_acked", "Events acknowledged.", _TG, registry=r)
        self.retried = Counter(
            "keel_events_retried", "Failed attempts that will be retried.", _TG, registry=r
        )
        self.dead_lettered = Counter(
            "keel_events_dead_lettered", "Events moved to the dead-letter topic.", _TG, registry=r
        )
        self.lag = Gauge(
            "keel_events_lag",
            "Undelivered and pending events on the partitions this process owns.",
            _TG,
            registry=r,
        )
        self.handler_seconds = Histogram(
            "keel_events_handler_seconds",
            "Time from hand-out to ack or nack.",
            _TG,
            buckets=_BUCKETS,
            registry=r,
        )


_default: EventsMetrics | None = None


def events_metrics() -> EventsMetrics:
    """The process-wide events series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = EventsMetrics(REGISTRY)
    return _default
