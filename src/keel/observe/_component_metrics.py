"""Series for sessions, etcd endpoints, health probes and balancers.

These events are rare next to store calls (a keepalive every ttl/3, a probe
per instance per interval, an endpoint failover now and then); they are kept
as plain numbers by label values and turned into metric families when
scraped, so recording them needs no ``prometheus_client`` import. Balancer
picks are different: a pick is a hot path of every client call, and
balancers already count their picks, successes and failures; those counts
are read from the live balancers at scrape time (a weak set, nothing added
to the pick). A balancer that is garbage-collected
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
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from keel.observe._registry import LateCollector, cumulative

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["ComponentMetrics", "component_metrics"]

_KEEPALIVE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROBE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Balancers:
    """The live balancers, read at scrape time."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        from prometheus_client.core import GaugeMetricFamily

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


class _Histogram:
    """One labelled histogram's numbers: bucket counts (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        return cumulative(self.counts, self.bounds)


# name, help text, label names, kind: the labelled counters and gauges kept as plain numbers.
_SERIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "keel_sessions": ("Sessions open now.", ("store",), "gauge"),
    "keel_session_keepalive_failures": (
        "Lease renewals that failed or timed out (the session retries).",
        ("store",),
        "counter",
    ),
    "keel_session_lost": (
        "Sessions lost: the lease expired or could not be renewed in time.",
        ("store",),
        "counter",
    ),
    "keel_store_failovers": (
        "Moves of a store connection to another endpoint.",
        ("store",),
        "counter",
    ),
    "keel_store_endpoint": (
        "1 for the endpoint a connection uses now, 0 for one it left.",
        ("store", "endpoint"),
        "gauge",
    ),
    "keel_health_probes": (
        "Active health probes, by check type and result (healthy, unhealthy).",
        ("check", "result"),
        "counter",
    ),
    "keel_balancer_ejections": (
        "Instances ejected by outlier detection.",
        ("balancer",),
        "counter",
    ),
}
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "keel_session_keepalive_seconds": ("Time a session's lease renewal took.", ("store",)),
    "keel_health_probe_duration_seconds": ("Time one active health probe took.", ("check",)),
}


class ComponentMetrics(LateCollector):
    """The session, endpoint, probe and balancer series on one registry.

    The numbers are plain ints and floats turned into metric families at
    scrape time, so recording needs no ``prometheus_client`` import (see
    :mod:`keel.observe._registry`).

    Args:
        registry: where to register (default: a new private registry).
    """

    def _start(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _SERIES}
        self._histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {
            name: {} for name in _HISTOGRAMS
        }
        self._balancers = _Balancers()
        self._holds = _Holds()

    def _add(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self._values[name]
        values[labels] = values.get(labels, 0.0) + amount

    def _set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._values[name][labels] = value

    def _observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        histograms = self._histograms[name]
        found = histograms.get(labels)
        if found is None:
            bounds = _KEEPALIVE if name == "keel_session_keepalive_seconds" else _PROBE
            found = histograms[labels] = _Histogram(bounds)
        found.observe(value)

    def session_opened(self, store: str) -> None:
        """A session took its lease (its failure and loss counters start at 0, visibly)."""
        self._add("keel_sessions", (store,))
        self._add("keel_session_keepalive_failures", (store,), 0)
        self._add("keel_session_lost", (store,), 0)

    def session_closed(self, store: str) -> None:
        """A session ended (closed or lost)."""
        self._add("keel_sessions", (store,), -1)

    def keepalive(self, store: str, seconds: float | None) -> None:
        """One lease renewal: ``seconds`` it took, or None when it failed."""
        if seconds is None:
            self._add("keel_session_keepalive_failures", (store,))
        else:
            self._observe("keel_session_keepalive_seconds", (store,), seconds)

    def session_lost(self, store: str) -> None:
        """A session was lost."""
        self._add("keel_session_lost", (store,))

    def endpoint(self, store: str, endpoint: str, *, previous: str | None = None) -> None:
        """A connection uses ``endpoint`` now (a failover when it left ``previous``)."""
        self._add("keel_store_failovers", (store,), 0 if previous is None else 1)
        if previous is not None:
            self._set("keel_store_endpoint", (store, previous), 0)
        self._set("keel_store_endpoint", (store, endpoint), 1)

    def probed(self, check: str, healthy: bool, seconds: float) -> None:
        """One health probe of type ``check`` finished."""
        self._add("keel_health_probes", (check, "healthy" if healthy else "unhealthy"))
        self._observe("keel_health_probe_duration_seconds", (check,), seconds)

    def balancer(self, balancer: Any) -> None:
        """Read ``balancer``'s pick and outcome counts at scrape time while it lives."""
        self._balancers.live.add(balancer)
        if hasattr(balancer, "_ejected"):  # outlier detection: its ejections start at 0
            self._add("keel_balancer_ejections", (type(balancer).__name__,), 0)

    def hold(self, ownership: Any) -> None:
        """Count ``ownership``'s age in the longest-hold series while it is held."""
        self._holds.live.add(ownership)

    def ejected(self, balancer: str) -> None:
        """Outlier detection ejected one instance."""
        self._add("keel_balancer_ejections", (balancer,))

    def collect(self) -> Iterator[Metric]:
        """Metric families of the current numbers (called by the registry on scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for name, (text, labels, kind) in _SERIES.items():
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, text, labels=labels)
            for values, number in sorted(self._values[name].items()):
                family.add_metric(list(values), number)
            yield family
        for name, (text, labels) in _HISTOGRAMS.items():
            histogram = HistogramMetricFamily(name, text, labels=labels)
            for values, found in sorted(self._histograms[name].items()):
                histogram.add_metric(list(values), found.cumulative(), found.sum)
            yield histogram
        yield from self._balancers.collect()
        yield from self._holds.collect()

    def __repr__(self) -> str:
        return f"ComponentMetrics(registry={self._registry!r})"


_default: ComponentMetrics | None = None


def component_metrics() -> ComponentMetrics:
    """The process-wide series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = ComponentMetrics.on_default_registry()
    return _default
