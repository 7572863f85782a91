"""Settings, statistics and the metrics hook of the gateway's upstream client.

(:class:`~keel.gateway._proxy.Upstreams`, which re-exports them.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from keel.balance import OutlierSettings, PeakEwmaSettings
from keel.errors import ValidationError
from keel.resilience import BreakerSettings, RetryBudgetSettings

__all__ = [
    "IDEMPOTENT_METHODS",
    "ResponseAbortedError",
    "UpstreamMetrics",
    "UpstreamSettings",
    "UpstreamStatistics",
]

# RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    """How the gateway talks to upstream instances.

    Attributes:
        connect_timeout_s: TCP connect timeout of one attempt.
        body_idle_timeout_s: longest wait for the next response body chunk once
            the head was sent (None: no limit, for quiet event streams).
        max_connections_per_instance: open connections per instance at most;
            past it requests wait for one to be given back.
        max_idle_per_instance: kept-alive idle connections per instance.
        idle_timeout_s: idle connections older than this are not reused (keep
            it below the upstream server's keep-alive timeout: uvicorn's is 5 s).
        retry_statuses: upstream statuses after which an idempotent request
            whose body is in hand tries another instance.
        budget: the retry budget shared by every route.
        breaker: the circuit breaker kept per instance.
        outlier: ejection of instances that keep failing, per service.
        peak_ewma: latency averaging and failure penalty of the balancer that
            picks among the instances not ejected (peak-EWMA P2C).
        idempotent_methods: methods retried after they were sent.
    """

    connect_timeout_s: float = 2.0
    body_idle_timeout_s: float | None = 300.0
    max_connections_per_instance: int = 512
    max_idle_per_instance: int = 128
    idle_timeout_s: float = 4.0
    retry_statuses: frozenset[int] = frozenset({502, 503})
    budget: RetryBudgetSettings = field(default_factory=RetryBudgetSettings)
    breaker: BreakerSettings = field(
        default_factory=lambda: BreakerSettings(
            window_size=20, minimum_calls=5, open_duration_s=5.0, half_open_max_calls=1
        )
    )
    outlier: OutlierSettings = field(
        default_factory=lambda: OutlierSettings(
            consecutive_failures=5, base_ejection_s=10.0, max_ejection_percent=50.0
        )
    )
    peak_ewma: PeakEwmaSettings = field(default_factory=PeakEwmaSettings)
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "idle_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        idle = self.body_idle_timeout_s
        if idle is not None and not (idle > 0 and math.isfinite(idle)):
            raise ValidationError(f"body_idle_timeout_s must be seconds > 0 or None, got {idle!r}")
        if self.max_connections_per_instance < 1 or self.max_idle_per_instance < 0:
            raise ValidationError(
                "max_connections_per_instance must be >= 1 and max_idle_per_instance >= 0"
            )
        if any(not 100 <= s <= 599 for s in self.retry_statuses):
            raise ValidationError(
                f"retry_statuses must be HTTP statuses, got {sorted(self.retry_statuses)!r}"
            )


class UpstreamMetrics(Protocol):
    """What :class:`Upstreams` reports (core's ``GatewayMetrics`` implements it)."""

    def upstream_request(self, route: str, upstream: str, status: int, latency_s: float) -> None:
        """One forwarded request ended with ``status`` after ``latency_s`` (to the head)."""

    def upstream_retry(self, route: str, upstream: str) -> None:
        """An attempt after the first."""

    def breaker_state(self, upstream: str, instance: str, state: str) -> None:
        """The breaker of ``instance`` moved to ``state`` (closed/open/half_open)."""


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """A snapshot of :class:`Upstreams`.

    Attributes:
        requests: requests forwarded (HTTP).
        websockets: WebSocket sessions opened upstream.
        retries: attempts after the first.
        failed: answered 502 by the gateway.
        unavailable: answered 503 (every breaker open).
        timed_out: answered 504 (deadline).
        aborted: responses cut off after their head was sent.
        breakers_open: instances whose breaker is open now.
        ejected: instances outlier ejection keeps out now.
        connections_open: upstream connections open (busy and idle).
        connections_idle: idle kept-alive upstream connections.
        connections_opened: connections opened so far.
    """

    requests: int
    websockets: int
    retries: int
    failed: int
    unavailable: int
    timed_out: int
    aborted: int
    breakers_open: int
    ejected: int
    connections_open: int
    connections_idle: int
    connections_opened: int


class ResponseAbortedError(ConnectionError):
    """The upstream failed after the response head was sent: the client connection must drop."""
