"""Series for sessions, etcd endpoints, health probes and balancers.

These events are rare next to store calls (a keepalive every ttl/3, a probe
per instance per interval, an endpoint failover now and then), so they use
``prometheus_client`` metric objects with label children made once and
cached. Balancer picks are the exception: a pick is a hot path of every
client call, and balancers already count their picks, successes and
failures; those counts are read from the live balancers at scrape time (a
weak set, nothing added to the pick). A balancer that is garbage-collected
takes its counts with it (a counter reset, which ``rate()`` handles).

Series:

- ``keel_sessions{store}`` open sessions; ``keel_session_keepalive_seconds{store}``
  (histogram), ``keel_session_keepalive_failures_total{store}``,
  ``keel_session_lost_total{store}``;
- ``keel_store_failovers_total{store}`` (etcd moved to another endpoint),
  ``keel_store_endpoint{store,endpoint}`` (1: the member in use);
- ``keel_health_probes_total{check,result}``, ``keel_health_probe_duration_seconds{check}``;
- ``keel_coord_longest_hold_seconds{kind}``: age of the oldest lock, slot or
  leadership held now (read at scrape time from the live ones);
- ``keel_balancer_picks_total{balancer}``, ``keel_balancer_calls_total{balancer,outcome}``,
  ``keel_balancer_ejections_total{balancer}``, ``keel_balancer_ejected{balancer}``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ComponentMetrics", "component_metrics"]

_KEEPALIVE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROBE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Balancers:
    """The live balancers, read at scrape time."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        picks = CounterMetricFamily(
            "keel_balancer_picks", "Instances picked, by balancer.", labels=("balancer",)
        )
        calls = CounterMetricFamily(
            "keel_balancer_calls",
            "Call outcomes reported to balancers.",
            labels=("balancer", "outcome"),
        )
        ejected = GaugeMetricFamily(
            "keel_balancer_ejected",
            "Instances ejected now by outlier detection.",
            labels=("balancer",),
        )
        sums: dict[str, list[int]] = {}
        for b in list(self.live):
            row = sums.setdefault(type(b).__name__, [0, 0, 0, 0])
            row[0] += b._picks
            row[1] += b._successes
            row[2] += b._failures
            row[3] += len(getattr(b, "_ejected", ()))
        for name, (n, ok, bad, out) in sorted(sums.items()):
            picks.add_metric([name], n)
            calls.add_metric([name, "success"], ok)
            calls.add_metric([name, "failure"], bad)
            if name == "OutlierEjection":
                ejected.add_metric([name], out)
        yield from (picks, calls, ejected)


class _Holds:
    """Live ownerships (locks, slots, leaderships), for the longest current hold."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        longest = GaugeMetricFamily(
            "keel_coord_longest_hold_seconds",
            "Age of the oldest lock, slot or leadership this process holds now.",
            labels=("kind",),
        )
        now = time.monotonic()
        ages: dict[str, float] = {"lock": 0.0, "slot": 0.0, "leadership": 0.0}
        for o in list(self.live):
            if o._ended or o.lost.is_set():
                continue
            ages[o.kind] = max(ages.get(o.kind, 0.0), now - o.since)
        for kind, age in sorted(ages.items()):
            longest.add_metric([kind], age)
        yield longest


class ComponentMetrics:
    """The session, endpoint, probe and balancer series on one registry.

    Args:
        registry: where to register (default: a new private registry).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self._sessions = Gauge("keel_sessions", "Sessions open now.", ("store",), registry=r)
        self._keepalive = Histogram(
            "keel_session_keepalive_seconds",
            "Time a session's lease renewal took.",
            ("store",),
            buckets=_KEEPALIVE,
            registry=r,
        )
        self._keepalive_failures = Counter(
            "keel_session_keepalive_failures",
            "Lease renewals that failed or timed out (the session retries).",
            ("store",),
            registry=r,
        )
        self._lost = Counter(
            "keel_session_lost",
            "Sessions lost: the lease expired or could not be renewed in time.",
            ("store",),
            registry=r,
        )
        self._failovers = Counter(
            "keel_store_failovers",
            "Moves of a store connection to another endpoint.",
            ("store",),
            registry=r,
        )
        self._endpoint = Gauge(
            "keel_store_endpoint",
            "1 for the endpoint a connection uses now, 0 for one it left.",
            ("store", "endpoint"),
            registry=r,
        )
        self._probes = Counter(
            "keel_health_probes",
            "Active health probes, by check type and result (healthy, unhealthy).",
            ("check", "result"),
            registry=r,
        )
        self._probe_seconds = Histogram(
            "keel_health_probe_duration_seconds",
            "Time one active health probe took.",
            ("check",),
            buckets=_PROBE,
            registry=r,
        )
        self._ejections = Counter(
            "keel_balancer_ejections",
            "Instances ejected by outlier detection.",
            ("balancer",),
            registry=r,
        )
        self._balancers = _Balancers()
        r.register(self._balancers)
        self._holds = _Holds()
        r.register(self._holds)
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def session_opened(self, store: str) -> None:
        """A session took its lease (its failure and loss counters start at 0, visibly)."""
        self._child(self._sessions, store).inc()
        self._child(self._keepalive_failures, store)
        self._child(self._lost, store)

    def session_closed(self, store: str) -> None:
        """A session ended (closed or lost)."""
        self._child(self._sessions, store).dec()

    def keepalive(self, store: str, seconds: float | None) -> None:
        """One lease renewal: ``seconds`` it took, or None when it failed."""
        if seconds is None:
            self._child(self._keepalive_failures, store).inc()
        else:
            self._child(self._keepalive, store).observe(seconds)

    def session_lost(self, store: str) -> None:
        """A session was lost."""
        self._child(self._lost, store).inc()

    def endpoint(self, store: str, endpoint: str, *, previous: str | None = None) -> None:
        """A connection uses ``endpoint`` now (a failover when it left ``previous``)."""
        failovers = self._child(self._failovers, store)  # 0 until the first failover
        if previous is not None:
            failovers.inc()
            self._child(self._endpoint, store, previous).set(0)
        self._child(self._endpoint, store, endpoint).set(1)

    def probed(self, check: str, healthy: bool, seconds: float) -> None:
        """One health probe of type ``check`` finished."""
        self._child(self._probes, check, "healthy" if healthy else "unhealthy").inc()
        self._child(self._probe_seconds, check).observe(seconds)

    def balancer(self, balancer: Any) -> None:
        """Read ``balancer``'s pick and outcome counts at scrape time while it lives."""
        self._balancers.live.add(balancer)
        if hasattr(balancer, "_ejected"):  # outlier detection: its ejections start at 0
            self._child(self._ejections, type(balancer).__name__)

    def hold(self, ownership: Any) -> None:
        """Count ``ownership``'s age in the longest-hold series while it is held."""
        self._holds.live.add(ownership)

    def ejected(self, balancer: str) -> None:
        """Outlier detection ejected one instance."""
        self._child(self._ejections, balancer).inc()

    def __repr__(self) -> str:
        return f"ComponentMetrics(registry={self.registry!r})"


_default: ComponentMetrics | None = None


def component_metrics() -> ComponentMetrics:
    """The process-wide series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = ComponentMetrics(REGISTRY)
    return _default
