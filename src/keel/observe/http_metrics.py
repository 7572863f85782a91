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
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["HttpMetrics", "http_metrics"]

# Latency buckets for service calls: 1 ms .. 10 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.server_requests = Counter(
            "keel_http_server_requests",
            "HTTP requests served, by route and status.",
            ("service", "method", "route", "status"),
            registry=self.registry,
        )
        self.server_duration = Histogram(
            "keel_http_server_request_duration_seconds",
            "Time to serve an HTTP request (until the response body is sent).",
            ("service", "method", "route"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.server_in_flight = Gauge(
            "keel_http_server_in_flight",
            "HTTP requests being served now.",
            ("service",),
            registry=self.registry,
        )
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

    def served(self, service: str, method: str, route: str, status: int, duration_s: float) -> None:
        """Record one served request."""
        self.server_requests.labels(service, method, route, str(status)).inc()
        self.server_duration.labels(service, method, route).observe(duration_s)

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
