"""Prometheus series of the gateway, per route and per upstream.

Series (all ``keel_gateway_``):

- ``requests_total{route,status}`` and ``request_duration_seconds{route}``
  (histogram): every request the gateway answered, ``route="-"`` when none matched;
- ``errors_total{route,kind}``: answers the gateway made instead of the upstream's
  (``not_found``, ``method``, ``too_large``, ``unauthorized``, ``forbidden``,
  ``limited``, ``bad_request``, ``upstream_aborted``);
- ``limited_total{route,reason}``: requests refused by a limit (``route``,
  ``consumer``, ``client``, ``concurrency``);
- ``upstream_requests_total{route,upstream,status}`` (``status`` is ``error``
  when no response came back), ``upstream_duration_seconds{route,upstream}``
  (histogram, per attempt), ``upstream_retries_total{route,upstream}``,
  ``upstream_errors_total{route,upstream,kind}`` (``connect``, ``timeout``,
  ``reset``, ``breaker_open``, ``no_instance``...);
- ``breaker_state{upstream,instance}``: 0 closed, 1 half-open, 2 open;
- ``in_flight``, ``routes`` (routes in the running document) and
  ``config_version`` (its version in the config center).

As :mod:`keel.observe.http_metrics` does, the per-request numbers are plain
Python ints and floats turned into metric families at scrape time: the app
keeps each route's :class:`RouteSeries` in its compiled route, so a request
costs a few additions, no label lookup and no lock. Labels are bounded: at
most ``max_routes`` route labels and ``max_instances`` breaker series, then
``other``.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = [
    "BREAKER_STATES",
    "BUCKETS",
    "GatewayMetrics",
    "RouteSeries",
    "UpstreamSeries",
    "gateway_metrics",
]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency buckets, 0.5 ms to 10 s."""

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
"""Breaker state names and their gauge values."""

_INF = float("inf")


class _Histogram:
    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*BUCKETS, _INF), self.buckets, strict=True):
            total += count
            out.append(("+Inf" if bound == _INF else repr(bound), float(total)))
        return out


class RouteSeries:
    """One route's numbers: answers by status, latency, gateway-made errors, limited requests."""

    __slots__ = ("duration", "errors", "limited", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.duration = _Histogram()
        self.errors: dict[str, int] = {}
        self.limited: dict[str, int] = {}

    def observe(self, status: int, duration_s: float) -> None:
        """Count one answered request."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.duration.observe(duration_s)

    def error(self, kind: str) -> None:
        """Count one answer the gateway made itself (``not_found``, ``too_large``...)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def limit(self, reason: str) -> None:
        """Count one request refused by a limit (``route``, ``consumer``...)."""
        self.limited[reason] = self.limited.get(reason, 0) + 1

    def __repr__(self) -> str:
        return f"RouteSeries(statuses={self.statuses}, errors={self.errors})"


class UpstreamSeries:
    """One (route, upstream): attempts by status, per-attempt latency, retries, failures."""

    __slots__ = ("duration", "failures", "retries", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}  # 0: no response came back
        self.duration = _Histogram()
        self.retries = 0
        self.failures: dict[str, int] = {}

    def observe(self, status: int | None, duration_s: float) -> None:
        """Count one attempt (``status`` None or 0: no response came back)."""
        statuses, key = self.statuses, status or 0
        statuses[key] = statuses.get(key, 0) + 1
        self.duration.observe(duration_s)

    def retried(self) -> None:
        """Count one attempt after the first."""
        self.retries += 1

    def failed(self, kind: str) -> None:
        """Count one failure (``connect``, ``timeout``, ``reset``, ``breaker_open``...)."""
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def __repr__(self) -> str:
        return f"UpstreamSeries(statuses={self.statuses}, retries={self.retries})"


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, GatewayMetrics] = weakref.WeakKeyDictionary()


def gateway_metrics(registry: CollectorRegistry) -> GatewayMetrics:
    """The one :class:`GatewayMetrics` of ``registry`` (made on first use).

    Gateways in one process that export to the same registry share its
    series, as the services of one process share the HTTP series; a second
    collector of the same names could not be registered.
    """
    found = _SHARED.get(registry)
    if found is None:
        found = _SHARED[registry] = GatewayMetrics(registry)
    return found


class GatewayMetrics:
    """The gateway's series on one registry (see the module docstring).

    Args:
        registry: where to register (default: a new private registry).
        max_routes: distinct route labels before ``other``.
        max_instances: distinct breaker series before ``other``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_routes: int = 500,
        max_instances: int = 1000,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_routes = max_routes
        self.max_instances = max_instances
        self._routes: dict[str, RouteSeries] = {}
        self._upstreams: dict[tuple[str, str], UpstreamSeries] = {}
        self._breakers: dict[tuple[str, str], int] = {}
        self.in_flight = 0
        self.route_count = 0
        self.config_version = 0
        self.registry.register(_Collector(self))

    def route(self, route: str) -> RouteSeries:
        """The series of ``route`` (``-`` for unmatched requests); keep it, it is stable."""
        found = self._routes.get(route)
        if found is None:
            if len(self._routes) >= self.max_routes and route != "-":
                route = "other"
                found = self._routes.get(route)
            if found is None:
                found = self._routes[route] = RouteSeries()
        return found

    def upstream(self, route: str, upstream: str) -> UpstreamSeries:
        """The series of calls from ``route`` to ``upstream`` (a service name or URL)."""
        key = (route, upstream)
        found = self._upstreams.get(key)
        if found is None:
            if len(self._upstreams) >= 4 * self.max_routes:
                key = ("other", "other")
                found = self._upstreams.get(key)
            if found is None:
                found = self._upstreams[key] = UpstreamSeries()
        return found

    def breaker(self, upstream: str, instance: str, state: str) -> None:
        """Set the breaker state of one upstream instance (``closed``, ``half_open``, ``open``)."""
        key = (upstream, instance)
        if key not in self._breakers and len(self._breakers) >= self.max_instances:
            key = (upstream, "other")
        self._breakers[key] = BREAKER_STATES.get(state, 0)

    # -- what keel.gateway._proxy.Upstreams reports (its UpstreamMetrics protocol) --

    def upstream_request(self, route: str, upstream: str, status: int, latency_s: float) -> None:
        """One forwarded request ended with ``status`` (0: the client left) after ``latency_s``."""
        found = self._upstreams.get((route, upstream))
        if found is None:
            found = self.upstream(route, upstream)
        found.observe(status, latency_s)

    def upstream_retry(self, route: str, upstream: str) -> None:
        """One attempt after the first."""
        self.upstream(route, upstream).retried()

    def breaker_state(self, upstream: str, instance: str, state: str) -> None:
        """The breaker of ``instance`` moved to ``state``."""
        self.breaker(upstream, instance, state)

    def forget_instance(self, upstream: str, instance: str) -> None:
        """Drop the breaker series of an instance that left discovery."""
        self._breakers.pop((upstream, instance), None)

    def __repr__(self) -> str:
        return f"GatewayMetrics(routes={len(self._routes)}, upstreams={len(self._upstreams)})"


class _Collector:
    """Turns the plain numbers into metric families when scraped."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._routes()
        yield from self._upstreams()
        breakers = GaugeMetricFamily(
            "keel_gateway_breaker_state",
            "Circuit breaker per upstream instance: 0 closed, 1 half-open, 2 open.",
            labels=("upstream", "instance"),
        )
        for (upstream, instance), state in list(self.m._breakers.items()):
            breakers.add_metric([upstream, instance], state)
        yield breakers
        yield GaugeMetricFamily(
            "keel_gateway_in_flight", "Requests in the gateway now.", self.m.in_flight
        )
        yield GaugeMetricFamily(
            "keel_gateway_routes", "Routes in the running document.", self.m.route_count
        )
        yield GaugeMetricFamily(
            "keel_gateway_config_version",
            "Config-center version of the running route document.",
            self.m.config_version,
        )

    def _routes(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "keel_gateway_requests",
            "Requests answered, by route and status.",
            labels=("route", "status"),
        )
        duration = HistogramMetricFamily(
            "keel_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            labels=("route",),
        )
        errors = CounterMetricFamily(
            "keel_gateway_errors",
            "Answers the gateway made itself instead of the upstream's, by kind.",
            labels=("route", "kind"),
        )
        limited = CounterMetricFamily(
            "keel_gateway_limited",
            "Requests refused by a limit, by reason.",
            labels=("route", "reason"),
        )
        for route, series in list(self.m._routes.items()):
            for status, count in list(series.statuses.items()):
                requests.add_metric([route, str(status)], count)
            duration.add_metric([route], series.duration.cumulative(), series.duration.sum)
            for kind, count in list(series.errors.items()):
                errors.add_metric([route, kind], count)
            for reason, count in list(series.limited.items()):
                limited.add_metric([route, reason], count)
        yield from (requests, duration, errors, limited)

    def _upstreams(self) -> Iterator[Metric]:
        labels = ("route", "upstream")
        requests = CounterMetricFamily(
            "keel_gateway_upstream_requests",
            "Attempts sent to upstreams, by status ('error': no response).",
            labels=(*labels, "status"),
        )
        duration = HistogramMetricFamily(
            "keel_gateway_upstream_duration_seconds",
            "Time from sending an attempt to its response headers.",
            labels=labels,
        )
        retries = CounterMetricFamily(
            "keel_gateway_upstream_retries", "Attempts after the first one.", labels=labels
        )
        errors = CounterMetricFamily(
            "keel_gateway_upstream_errors",
            "Failed attempts, by kind (connect, timeout, reset, breaker_open, no_instance...).",
            labels=(*labels, "kind"),
        )
        for key, series in list(self.m._upstreams.items()):
            for status, count in list(series.statuses.items()):
                requests.add_metric([*key, str(status) if status else "error"], count)
            duration.add_metric(list(key), series.duration.cumulative(), series.duration.sum)
            retries.add_metric(list(key), series.retries)
            for kind, count in list(series.failures.items()):
                errors.add_metric([*key, kind], count)
        yield from (requests, duration, retries, errors)
