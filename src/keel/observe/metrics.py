"""Prometheus metrics, and the hook protocol keel's policies report through.

The resilience policies take an optional ``listener``: anything with the four
methods of :class:`ResilienceListener`. With :class:`PrometheusListener` every
call, rejection, breaker state change and limiter wait becomes a labelled
Prometheus series. With no listener a policy reports to
:func:`events_listener`: rejections, breaker transitions, admission waits,
retries, hedges and fallbacks (the rare events an operator alerts on), but
not each successful call, so a breaker's hot path stays free of metrics.
Label children are made once per label set and cached (``labels()`` takes a
lock and validates on every call).
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "PrometheusListener",
    "ResilienceListener",
    "default_listener",
    "events_listener",
    "policy_listener",
]

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
    ``keel_resilience_state{policy,name}`` (0 closed, 1 half-open, 2 open),
    ``keel_resilience_transitions_total{policy,name,state}`` and
    ``keel_resilience_wait_seconds{policy,name}``.

    Policy names are labels, and some callers name a policy per instance (the
    HTTP and gRPC clients keep a breaker per instance id): past ``max_names``
    distinct names, further ones are reported as ``name="other"``, so
    instances coming and going for months cannot grow the series without end.

    Args:
        registry: where the series are registered; one listener per registry
            (use :func:`default_listener` for the process-wide one).
        max_names: distinct policy names with their own series.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_names: int = 500) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_names = max_names
        self._names: set[str] = set()
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
        self._transitions = Counter(
            "keel_resilience_transitions",
            "State changes of stateful policies (circuit breakers), by new state.",
            (*labels, "state"),
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, policy: str, name: str, *labels: str) -> Any:
        key = (metric._name, policy, name, *labels)
        child = self._children.get(key)
        if child is None:
            if name not in self._names:
                if len(self._names) >= self.max_names and name != "other":
                    return self._child(metric, policy, "other", *labels)
                self._names.add(name)
            child = self._children[key] = metric.labels(policy, name, *labels)
        return child

    def on_call(self, policy: str, name: str, outcome: str) -> None:
        """Count one finished call."""
        self._child(self._calls, policy, name, outcome).inc()

    def on_rejected(self, policy: str, name: str, reason: str) -> None:
        """Count one refused call."""
        self._child(self._rejections, policy, name, reason).inc()

    def on_state_change(self, policy: str, name: str, state: str) -> None:
        """Set the state gauge and count the transition."""
        self._child(self._state, policy, name).set(_STATE_VALUES.get(state, -1.0))
        self._child(self._transitions, policy, name, state).inc()

    def on_wait(self, policy: str, name: str, seconds: float) -> None:
        """Observe one admission wait."""
        self._child(self._wait, policy, name).observe(seconds)

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


class _EventsListener:
    """Forwards everything but plain success/failure call counts (see :func:`events_listener`)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: PrometheusListener) -> None:
        self._inner = inner

    def on_call(self, policy: str, name: str, outcome: str) -> None:
        if outcome not in ("success", "failure"):  # retried, hedged, fallback
            self._inner.on_call(policy, name, outcome)

    def on_rejected(self, policy: str, name: str, reason: str) -> None:
        self._inner.on_rejected(policy, name, reason)

    def on_state_change(self, policy: str, name: str, state: str) -> None:
        self._inner.on_state_change(policy, name, state)

    def on_wait(self, policy: str, name: str, seconds: float) -> None:
        self._inner.on_wait(policy, name, seconds)

    def __repr__(self) -> str:
        return "events_listener()"


_events: _EventsListener | None = None


def events_listener() -> ResilienceListener:
    """The listener policies use when given none: the default series, rare events only.

    Rejections, breaker states and transitions, waits, retries, hedges and
    fallbacks are recorded; successful and failed calls are not counted (pass
    ``listener=default_listener()`` for those).
    """
    global _events
    if _events is None:
        _events = _EventsListener(default_listener())
    return _events


def policy_listener(listener: ResilienceListener | None) -> ResilienceListener:
    """``listener``, or :func:`events_listener` when it is None (what a policy reports to)."""
    return listener if listener is not None else events_listener()
