"""Prometheus metrics, and the hook protocol keel's policies report through.

The resilience policies take an optional ``listener``: anything with the four
methods of :class:`ResilienceListener`. With no listener a policy pays nothing
for metrics; with :class:`PrometheusListener` every call, rejection, breaker
state change and limiter wait becomes a labelled Prometheus series.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PrometheusListener", "ResilienceListener", "default_listener"]

# Breaker states as gauge values (closed is the healthy zero).
_STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class ResilienceListener(Protocol):
    """What a resilience policy reports. Every method must be cheap and never raise."""

    def on_call(self, policy: str, name: str, outcome: str) -> None:
        """A call finished through ``policy`` named ``name`` with ``outcome`` (success/failure)."""
        ...

    def on_rejected(self, policy: str, name: str, reason: str) -> None:
        """A call was refused without running (``reason``: open, throttled, full, limited...)."""
        ...

    def on_state_change(self, policy: str, name: str, state: str) -> None:
        """A stateful policy (a circuit breaker) moved to ``state``."""
        ...

    def on_wait(self, policy: str, name: str, seconds: float) -> None:
        """A call waited ``seconds`` for admission (limiter, shaper, bulkhead queue)."""
        ...


class PrometheusListener:
    """A :class:`ResilienceListener` that records ``prometheus-client`` series.

    Series: ``keel_resilience_calls_total{policy,name,outcome}``,
    ``keel_resilience_rejections_total{policy,name,reason}``,
    ``keel_resilience_state{policy,name}`` (0 closed, 1 half-open, 2 open) and
    ``keel_resilience_wait_seconds{policy,name}``.

    Args:
        registry: where the series are registered; one listener per registry
            (use :func:`default_listener` for the process-wide one).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("policy", "name")
        self._calls = Counter(
            "keel_resilience_calls",
            "Calls that ran through a resilience policy, by outcome.",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self._rejections = Counter(
            "keel_resilience_rejections",
            "Calls a resilience policy refused without running, by reason.",
            (*labels, "reason"),
            registry=self.registry,
        )
        self._state = Gauge(
            "keel_resilience_state",
            "State of a stateful policy: 0 closed, 1 half-open, 2 open.",
            labels,
            registry=self.registry,
        )
        self._wait = Histogram(
            "keel_resilience_wait_seconds",
            "Time calls waited for admission.",
            labels,
            registry=self.registry,
        )

    def on_call(self, policy: str, name: str, outcome: str) -> None:
        """Count one finished call."""
        self._calls.labels(policy, name, outcome).inc()

    def on_rejected(self, policy: str, name: str, reason: str) -> None:
        """Count one refused call."""
        self._rejections.labels(policy, name, reason).inc()

    def on_state_change(self, policy: str, name: str, state: str) -> None:
        """Set the state gauge."""
        self._state.labels(policy, name).set(_STATE_VALUES.get(state, -1.0))

    def on_wait(self, policy: str, name: str, seconds: float) -> None:
        """Observe one admission wait."""
        self._wait.labels(policy, name).observe(seconds)

    def __repr__(self) -> str:
        return f"PrometheusListener(registry={self.registry!r})"


_default: PrometheusListener | None = None


def default_listener() -> PrometheusListener:
    """The process-wide listener on ``prometheus_client.REGISTRY`` (created once).

    Returns:
        the same :class:`PrometheusListener` on every call.
    """
    global _default
    if _default is None:
        _default = PrometheusListener(REGISTRY)
    return _default
