"""Choosing the instance for one attempt: discovery's cached list, filters, balancer, breakers.

:class:`Picker` holds what must outlive a request: one balancer per service
(outlier ejection around peak-EWMA P2C) and one circuit breaker per instance.
Its :meth:`Picker.choose` is pure bookkeeping (no I/O), so the proxy's
per-request cost stays visible here. :class:`Target` is what a compiled route
hands the proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from keel.balance import OutlierEjection, PeakEwma, Ticket
from keel.clock import Clock
from keel.errors import CircuitOpenError
from keel.gateway._exchange import UpstreamError
from keel.gateway._settings import UpstreamMetrics, UpstreamSettings
from keel.registry import Discovery, Instance
from keel.resilience import BreakerState, BreakerStateChanged, BreakerTicket, CircuitBreaker

__all__ = ["NO_TICKET", "Picker", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a route forwards: a service by name (or a fixed URL) and its policies.

    Built once per route when the routes are compiled; the same object is
    passed with every request of that route.

    Attributes:
        route: the route id (metrics).
        service: forward to an instance of this service ...
        url: ... or to this fixed base URL (``http://10.0.0.5:8080``; a path
            is prepended to the request's).
        version: only instances with this version (``2.*`` matches a prefix).
        labels: only instances whose metadata holds these key/values.
        timeout_s: budget up to the response head, all attempts included.
        retries: extra attempts (idempotent methods, or requests never sent).
    """

    route: str
    service: str | None
    url: str | None = None
    version: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    retries: int = 2


class _NoTicket:
    """The balancer ticket of a call with nothing to balance (one candidate)."""

    __slots__ = ()

    def succeeded(self) -> None:
        """Nothing to record."""

    def failed(self) -> None:
        """Nothing to record."""


NO_TICKET = _NoTicket()


@dataclass(frozen=True, slots=True)
class _Fixed:
    """A fixed-URL upstream, shaped like an instance for the breaker and the pool."""

    id: str
    scheme: str
    address: str
    port: int
    base_path: bytes
    weight: int = 100
    zone: str = ""


class Picker:
    """Balancers and breakers of every upstream, and the choice of one instance per attempt.

    Args:
        discovery: where instances come from (its cache: no I/O per request).
        settings: breaker, ejection and balancer settings.
        clock: time source of breakers and balancers.
        metrics: breaker state changes are reported here.
    """

    def __init__(
        self,
        discovery: Discovery,
        settings: UpstreamSettings,
        clock: Clock,
        metrics: UpstreamMetrics | None,
    ) -> None:
        self.discovery = discovery
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._balancers: dict[str, OutlierEjection] = {}
        self._breakers: dict[str, dict[str, CircuitBreaker]] = {}
        self._filtered: dict[int, tuple[Target, object, tuple[Instance, ...]]] = {}
        self._fixed: dict[str, _Fixed] = {}

    async def instances(self, target: Target) -> tuple[Any, ...]:
        """The candidates of ``target``: cached discovery results, filtered, or the fixed URL."""
        found = self.cached(target)
        if found is not None:
            return found
        assert target.service is not None
        # first call: load and watch
        return self._filter(target, await self.discovery.instances(target.service))

    def cached(self, target: Target) -> tuple[Any, ...] | None:
        """:meth:`instances` without waiting: None when the service was never looked up."""
        if target.url is not None:
            return (self.fixed(target.url),)
        service = target.service
        assert service is not None
        cached = self.discovery.cached(service)
        if cached is None:
            return None
        return self._filter(target, cached)

    def _filter(self, target: Target, cached: tuple[Instance, ...]) -> tuple[Any, ...]:
        if target.version is None and not target.labels:
            return cached
        memo = self._filtered.get(id(target))
        if memo is not None and memo[0] is target and memo[1] is cached:
            return memo[2]
        chosen = tuple(i for i in cached if _fits(i, target))
        if len(self._filtered) > 4096:
            self._filtered.clear()
        self._filtered[id(target)] = (target, cached, chosen)
        return chosen

    def choose(
        self, target: Target, candidates: tuple[Any, ...], tried: set[str] | None
    ) -> tuple[Any, BreakerTicket, Ticket | _NoTicket]:
        """Pick an instance and admit the call through its breaker.

        Returns:
            the instance, its breaker ticket and its balancer ticket.

        Raises:
            UpstreamError: 502 when there is no candidate, 503 when every breaker refuses.
        """
        name = target.service or target.url or "?"
        if not candidates:
            raise UpstreamError(502, f"no instance of {name!r} is up")
        if tried:
            untried = tuple(i for i in candidates if i.id not in tried)
            candidates = untried or candidates
        if len(candidates) == 1:
            # Nothing to choose between: the breaker still guards the one instance,
            # but balancer bookkeeping (latency, ejection) would change no pick.
            instance = candidates[0]
            try:
                return instance, self._breaker(name, instance).allow(), NO_TICKET
            except CircuitOpenError:
                raise UpstreamError(
                    503, f"the only instance of {name!r} has an open circuit breaker"
                ) from None
        balancer = self._balancer(name)
        pool = candidates
        while pool:
            instance = balancer.pick(pool) if len(pool) > 1 else pool[0]
            try:
                gate = self._breaker(name, instance).allow()
            except CircuitOpenError:
                pool = tuple(i for i in pool if i is not instance)
                continue
            return instance, gate, balancer.track(instance)
        raise UpstreamError(503, f"every instance of {name!r} has an open circuit breaker")

    def _balancer(self, name: str) -> OutlierEjection:
        found = self._balancers.get(name)
        if found is None:
            found = self._balancers[name] = OutlierEjection(
                PeakEwma(self.settings.peak_ewma, clock=self._clock),
                self.settings.outlier,
                clock=self._clock,
            )
        return found

    def _breaker(self, name: str, instance: Any) -> CircuitBreaker:
        per = self._breakers.get(name)
        if per is None:
            per = self._breakers[name] = {}
        found = per.get(instance.id)
        if found is None:
            if len(per) > 1024:
                per.clear()  # instances came and went; their history is not worth keeping
            found = per[instance.id] = CircuitBreaker(
                self.settings.breaker,
                name=f"{name}/{instance.id}",
                clock=self._clock,
                on_state_change=self._breaker_changed(name, instance.id),
            )
        return found

    def _breaker_changed(self, name: str, instance: str) -> Callable[[BreakerStateChanged], None]:
        def changed(event: BreakerStateChanged) -> None:
            if self.metrics is not None:
                self.metrics.breaker_state(name, instance, event.new.value)

        return changed

    def fixed(self, url: str) -> _Fixed:
        """The endpoint of a fixed upstream URL (parsed once)."""
        found = self._fixed.get(url)
        if found is None:
            found = self._fixed[url] = _parse_fixed(url)
        return found

    def breakers_open(self) -> int:
        """Instances whose breaker is open now."""
        return sum(
            b.state is BreakerState.OPEN for per in self._breakers.values() for b in per.values()
        )

    def ejected(self) -> int:
        """Instances outlier ejection keeps out now."""
        return sum(len(b.statistics().ejected) for b in self._balancers.values())

    def __repr__(self) -> str:
        return (
            f"<Picker services={len(self._balancers)} "
            f"breakers_open={self.breakers_open()} ejected={self.ejected()}>"
        )


def _fits(instance: Instance, target: Target) -> bool:
    version = target.version
    if (
        version is not None
        and instance.version != version
        and not (version.endswith("*") and instance.version.startswith(version[:-1]))
    ):
        return False
    meta = instance.metadata
    return all(meta.get(k) == v for k, v in target.labels.items())


def _parse_fixed(url: str) -> _Fixed:

    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    base = parts.path.rstrip("/").encode()
    return _Fixed(f"{host}:{port}", scheme, host, port, base)
