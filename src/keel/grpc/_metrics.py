"""Prometheus series of gRPC calls, named after go-grpc-prometheus (with a ``keel_`` prefix).

Server side (``grpc_type`` is ``unary``, ``client_stream``, ``server_stream`` or
``bidi_stream``; ``grpc_service`` the full service name, ``grpc_method`` the
method):

- ``keel_grpc_server_started_total{grpc_type,grpc_service,grpc_method}``
- ``keel_grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}``
- ``keel_grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`` (histogram)
- ``keel_grpc_server_msg_received_total`` / ``keel_grpc_server_msg_sent_total``

and the same ``keel_grpc_client_*`` series for calls made by ``keel.grpc.Channel``.

As with the HTTP series (:func:`keel.observe.http_metrics`), the numbers are plain Python ints and
floats bumped on the event loop's thread and turned into metric families only
when scraped: a labelled ``prometheus_client`` child takes a lock per
increment, several microseconds on a call that costs ~100 us in all. Label
values come from registered methods only (an unknown method never reaches a
handler), so the series count is bounded by the services served or called.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["BUCKETS", "GrpcMetrics", "MethodSeries", "grpc_metrics", "split_method"]

# go-grpc-prometheus's default buckets are Prometheus' (5 ms .. 10 s); ours
# start at 0.5 ms: a loopback unary call takes well under a millisecond.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` as ``("pkg.Service", "Method")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


class MethodSeries:
    """The numbers of one (side, type, service, method): bump them, they are scraped later."""

    __slots__ = ("buckets", "codes", "received", "sent", "started", "sum")

    def __init__(self) -> None:
        self.started = 0
        self.codes: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.received = 0
        self.sent = 0

    def handled(self, code: str, duration_s: float) -> None:
        """Count one finished call with its status code name (``OK``, ``UNAVAILABLE``...)."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.buckets[bisect_left(BUCKETS, duration_s)] += 1
        self.sum += duration_s

    def __repr__(self) -> str:
        return f"MethodSeries(started={self.started}, codes={self.codes})"


class _Collector:
    """One side's series, turned into families at scrape time."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.series: dict[tuple[str, str, str], MethodSeries] = {}

    def collect(self) -> Iterator[Metric]:
        side = self.side
        started = CounterMetricFamily(
            f"keel_grpc_{side}_started", f"gRPC calls started on the {side}.", labels=_LABELS
        )
        handled = CounterMetricFamily(
            f"keel_grpc_{side}_handled",
            f"gRPC calls completed on the {side}, by status code.",
            labels=(*_LABELS, "grpc_code"),
        )
        seconds = HistogramMetricFamily(
            f"keel_grpc_{side}_handling_seconds",
            f"Time from the start of a gRPC call to its status, on the {side}.",
            labels=_LABELS,
        )
        received = CounterMetricFamily(
            f"keel_grpc_{side}_msg_received",
            f"gRPC messages received on the {side}.",
            labels=_LABELS,
        )
        sent = CounterMetricFamily(
            f"keel_grpc_{side}_msg_sent", f"gRPC messages sent on the {side}.", labels=_LABELS
        )
        for key, s in list(self.series.items()):
            labels = list(key)
            started.add_metric(labels, s.started)
            for code, count in list(s.codes.items()):
                handled.add_metric([*labels, code], count)
            cumulative, total = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), s.buckets, strict=True):
                total += count
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
            seconds.add_metric(labels, cumulative, s.sum)
            received.add_metric(labels, s.received)
            sent.add_metric(labels, s.sent)
        yield from (started, handled, seconds, received, sent)


class GrpcMetrics:
    """The ``keel_grpc_server_*`` and ``keel_grpc_client_*`` series on one registry.

    Args:
        registry: where to register (default: a new private registry).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server = _Collector("server")
        self._client = _Collector("client")
        self.registry.register(self._server)
        self.registry.register(self._client)

    @staticmethod
    def _get(collector: _Collector, grpc_type: str, full_method: str) -> MethodSeries:
        key = (grpc_type, *split_method(full_method))
        found = collector.series.get(key)
        if found is None:
            found = collector.series[key] = MethodSeries()
        return found

    def server(self, grpc_type: str, full_method: str) -> MethodSeries:
        """The server series of ``/pkg.Service/Method`` (keep it: one lookup per method)."""
        return self._get(self._server, grpc_type, full_method)

    def client(self, grpc_type: str, full_method: str) -> MethodSeries:
        """The client series of ``/pkg.Service/Method`` (for ``keel.grpc.Channel``)."""
        return self._get(self._client, grpc_type, full_method)

    def __repr__(self) -> str:
        return (
            f"GrpcMetrics(server_methods={len(self._server.series)}, "
            f"client_methods={len(self._client.series)})"
        )


_default: GrpcMetrics | None = None


def grpc_metrics() -> GrpcMetrics:
    """The process-wide gRPC series on ``prometheus_client.REGISTRY`` (created once)."""
    global _default
    if _default is None:
        _default = GrpcMetrics(REGISTRY)
    return _default
