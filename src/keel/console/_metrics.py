"""The console's own Prometheus series (served at ``/metrics`` from their own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ConsoleMetrics"]


class ConsoleMetrics:
    """Requests, logins, actions and live-stream series of one console."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "keel_console_requests", "HTTP requests", ["method", "status"], registry=r
        )
        self.latency = Histogram(
            "keel_console_request_seconds",
            "Server time per request (pages and fragments)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.logins = Counter("keel_console_logins", "Login attempts", ["outcome"], registry=r)
        self.actions = Counter(
            "keel_console_actions", "Operator actions", ["action", "outcome"], registry=r
        )
        self.live_clients = Gauge("keel_console_live_clients", "Open live streams", registry=r)
        self.live_changes = Counter(
            "keel_console_live_changes", "Store changes seen by the live watcher", registry=r
        )
        self.live_sent = Counter(
            "keel_console_live_sent", "Live notifications sent (after coalescing)", registry=r
        )
        self.live_dropped = Counter(
            "keel_console_live_dropped", "Live clients dropped for not reading", registry=r
        )
