"""RED metrics (rate, errors, duration) for keel's HTTP server middleware and client.

Series (all under ``keel_``, documented in ``docs/observability.md``):

- ``keel_http_server_requests_total{service,method,route,status}``
- ``keel_http_server_request_duration_seconds{service,method,route}`` (histogram)
- ``keel_http_server_in_flight{service}``
- ``keel_http_client_requests_total{service,method,status}`` (``status`` is the
  HTTP status, or ``error`` when no response came back)
- ``keel_http_client_request_duration_seconds{service,method}`` (histogram)
- ``keel_http_client_retries_total{service}``

Route labels are bounded: a route template when the framework names one
(Starlette, FastAPI), else the path while fewer than ``max_routes`` distinct
paths were seen, then ``other``; a scanner hitting random paths cannot blow up
the series count.

The server series are kept in plain Python numbers and turned into metric
families only when scraped (a custom collector): ``prometheus_client``'s
labelled children take a lock per increment, which cost about 5 us of the
~45 us a hello-world request takes under uvicorn here. Increments happen on
the event loop's thread; a scrape from another thread may see a request's
count before its duration, never a torn number.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["HttpMetrics", "InFlight", "RouteSeries", "http_metrics"]

# Latency buckets for service calls: 1 ms .. 10 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class InFlight:
    """Requests being served now by one service (a plain counter the middleware bumps)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __repr__(self) -> str:
        return f"InFlight({self.n})"


class RouteSeries:
    """One (service, method, route): counts by status and a duration histogram."""

    __slots__ = ("buckets", "statuses", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.statuses: dict[int, int] = {}

    def observe(self, status: int, duration_s: float) -> None:
        """Count one request."""
        self.buckets[bisect_left(BUCKETS, duration_s)] += 1
        self.sum += duration_s
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1

    def __repr__(self) -> str:
        return f"RouteSeries(count={sum(self.buckets)}, statuses={self.statuses})"


class _ServerCollector:
    """Turns the plain server numbers into metric families at scrape time."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], RouteSeries] = {}
        self.in_flight: dict[str, InFlight] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "keel_http_server_requests",
            "HTTP requests served, by route and status.",
            labels=("service", "method", "route", "status"),
        )
        durations = HistogramMetricFamily(
            "keel_http_server_request_duration_seconds",
            "Time to serve an HTTP request (until the response body is sent).",
            labels=("service", "method", "route"),
        )
        for key, series in list(self.routes.items()):
            for status, count in list(series.statuses.items()):
                requests.add_metric([*key, str(status)], count)
            cumulative, total = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), series.buckets, strict=True):
                total += count
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
            durations.add_metric(list(key), cumulative, series.sum)
        flight = GaugeMetricFamily(
            "keel_http_server_in_flight", "HTTP requests being served now.", labels=("service",)
        )
        for service, counter in list(self.in_flight.items()):
            flight.add_metric([service], counter.n)
        yield requests
        yield durations
        yield flight


class HttpMetrics:
    """The HTTP server and client series on one registry.

    Args:
        registry: where to register (default: a new private registry).
        max_routes: distinct raw paths labelled as themselves before ``other``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, max_routes: int = 200) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_routes = max_routes
        self._routes: set[str] = set()
        self._server = _ServerCollector()
        self.registry.register(self._server)
        self.client_requests = Counter(
            "keel_http_client_requests",
            "HTTP requests sent by keel.http.Client, by target service and status.",
            ("service", "method", "status"),
            registry=self.registry,
        )
        self.client_duration = Histogram(
            "keel_http_client_request_duration_seconds",
            "Time from sending a request to its response headers, all attempts included.",
            ("service", "method"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.client_retries = Counter(
            "keel_http_client_retries",
            "Attempts after the first one, by target service.",
            ("service",),
            registry=self.registry,
        )

    def route_label(self, template: str | None, path: str) -> str:
        """The bounded ``route`` label for a request.

        Args:
            template: the framework's route template, when it names one.
            path: the raw request path.

        Returns:
            the template, the path while few paths were seen, else ``other``.
        """
        if template:
            return template
        if path in self._routes:
            return path
        if len(self._routes) < self.max_routes:
            self._routes.add(path)
            return path
        return "other"

    def route(self, service: str, method: str, route: str) -> RouteSeries:
        """The series of one route (created on first use; the middleware keeps it)."""
        key = (service, method, route)
        found = self._server.routes.get(key)
        if found is None:
            found = self._server.routes[key] = RouteSeries()
        return found

    def in_flight(self, service: str) -> InFlight:
        """The in-flight counter of ``service``."""
        found = self._server.in_flight.get(service)
        if found is None:
            found = self._server.in_flight[service] = InFlight()
        return found

    def served(self, service: str, method: str, route: str, status: int, duration_s: float) -> None:
        """Record one served request."""
        self.route(service, method, route).observe(status, duration_s)

    def called(self, service: str, method: str, status: int | None, duration_s: float) -> None:
        """Record one client call (``status`` None: no response came back)."""
        label = "error" if status is None else str(status)
        self.client_requests.labels(service, method, label).inc()
        self.client_duration.labels(service, method).observe(duration_s)

    def retried(self, service: str) -> None:
        """Count one extra attempt to ``service``."""
        self.client_retries.labels(service).inc()

    def __repr__(self) -> str:
        return f"HttpMetrics(registry={self.registry!r}, routes={len(self._routes)})"


_default: HttpMetrics | None = None


def http_metrics() -> HttpMetrics:
    """The process-wide HTTP series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = HttpMetrics(REGISTRY)
    return _default
