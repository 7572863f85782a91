"""The transport that turns ``http://<service>/path`` into a call to one live instance.

Layers, as httpx's own (Client → Transport → Pool): the client is a plain
``httpx.AsyncClient``; this transport resolves service names and applies the
policies; one ``httpx.AsyncHTTPTransport`` (an httpcore pool, keyed by origin,
so one set of kept-alive connections per instance) does the I/O.

Per call: ``Timeout`` (the whole call) → ``Retry`` (budgeted) → per attempt:
pick an instance with the balancer (outlier ejection around peak-EWMA P2C)
among the cached instances, skipping those whose breaker is open and, when
possible, those this call already tried; send with the ``keel-deadline``
header (seconds left) and the W3C trace context; report the outcome to the
balancer and the instance's breaker. The instance list comes from
``Discovery.cached``: no store or DNS I/O per request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
from opentelemetry import trace

from keel.balance import Balancer, OutlierEjection, PeakEwma
from keel.errors import CircuitOpenError, NoInstanceError, RetryableError
from keel.http._settings import ClientSettings
from keel.observe import HttpMetrics, ResilienceListener, inject, tracer
from keel.registry import Discovery, Instance
from keel.resilience import (
    BreakerState,
    CircuitBreaker,
    Pipeline,
    Retry,
    RetryBudget,
    Timeout,
    remaining,
)

__all__ = ["DiscoveryTransport", "TransportStatistics"]

_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")


class _Retryable(RetryableError):
    """An attempt failed in a way worth another instance; carries what to give back."""

    def __init__(self, error: Exception | None, response: httpx.Response | None = None) -> None:
        super().__init__(str(error) if error else f"status {response and response.status_code}")
        self.error = error
        self.response = response


class _Call:
    """One request's attempts (state a retry must see: tried instances, last response)."""

    __slots__ = ("attempts", "idempotent", "request", "service", "t", "tried", "url")

    def __init__(self, t: DiscoveryTransport, service: str, request: httpx.Request) -> None:
        self.t = t
        self.service = service
        self.request = request
        self.url = request.url
        self.idempotent = request.method in t.settings.idempotent_methods
        if t.settings.idempotency_keys and request.method in ("POST", "PATCH"):
            # One key for every attempt: the service replays instead of running twice.
            request.headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
            self.idempotent = True
        self.tried: set[str] = set()
        self.attempts = 0

    async def attempt(self) -> httpx.Response:
        t = self.t
        self.attempts += 1
        if self.attempts > 1 and t.metrics is not None:
            t.metrics.retried(self.service)
        instance, gate = t.choose(self.service, self.tried)
        ticket = t.balancer(self.service).track(instance)
        request = self.request
        request.url = self.url.copy_with(
            scheme=instance.scheme if instance.scheme in ("http", "https") else "http",
            host=instance.address,
            port=instance.port,
        )
        left = remaining()
        if left != float("inf"):
            request.headers["keel-deadline"] = f"{left:.3f}"
        carrier: dict[str, str] = {}
        inject(carrier)
        request.headers.update(carrier)
        try:
            response = await t.pool.handle_async_request(request)
        except httpx.TransportError as exc:
            ticket.failed()
            gate.failed()
            self.tried.add(instance.id)
            unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if self.idempotent or unsent:
                raise _Retryable(exc) from exc
            raise
        except BaseException:
            ticket.failed()
            gate.cancelled()
            raise
        if response.status_code >= 500:
            ticket.failed()
            gate.failed()
        else:
            ticket.succeeded()
            gate.succeeded()
        if self.idempotent and response.status_code in t.settings.retry_statuses:
            self.tried.add(instance.id)
            if self.attempts < t.settings.retry.max_attempts:
                await response.aclose()
                raise _Retryable(None)
            raise _Retryable(None, response)
        return response


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """A snapshot of a :class:`DiscoveryTransport`.

    Attributes:
        calls: calls to services by name.
        passthrough: calls to plain hosts.
        retries: attempts after the first.
        services: services called so far.
        breakers_open: instances whose breaker is open now.
    """

    calls: int
    passthrough: int
    retries: int
    services: int
    breakers_open: int


class DiscoveryTransport(httpx.AsyncBaseTransport):
    """An httpx transport resolving service names through discovery.

    A URL's host is a service when it is a valid service name, has no port,
    is not an IP address nor ``localhost``, and either has no dot or has
    registered instances; anything else passes through untouched.

    Args:
        discovery: a started Discovery (the client owns it or the caller does).
        settings: timeouts, retry, breaker and ejection settings.
        metrics: HTTP client series (None: none).
        listener: resilience metrics hook for retry and breakers.
        tracer_provider: where client spans go (default: the global provider).
        pool: the connection pool transport (default: one built from settings).
        balancer: makes the inner balancer of each service (default:
            :class:`~keel.balance.PeakEwma`); outlier ejection wraps it.
    """

    def __init__(
        self,
        discovery: Discovery,
        *,
        settings: ClientSettings | None = None,
        metrics: HttpMetrics | None = None,
        listener: ResilienceListener | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        pool: httpx.AsyncBaseTransport | None = None,
        balancer: Callable[[], Balancer] = PeakEwma,
    ) -> None:
        self.discovery = discovery
        self.settings = s = settings or ClientSettings()
        self.metrics = metrics
        self._listener = listener
        self.pool = pool or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=s.max_connections, max_keepalive_connections=s.max_keepalive
            ),
            trust_env=False,
        )
        self._retry = Retry(s.retry, budget=RetryBudget(s.budget), name="http", listener=listener)
        self.pipeline = Pipeline(Timeout(s.timeout_s), self._retry, name="http")
        self._balancers: dict[str, OutlierEjection] = {}
        self._new_balancer = balancer
        self._breakers: dict[str, dict[str, CircuitBreaker]] = {}
        self._provider = tracer_provider
        self._tracer = tracer(tracer_provider)
        self._calls = self._passthrough = 0

    def balancer(self, service: str) -> Balancer:
        """The balancer of ``service`` (outlier ejection around the inner balancer)."""
        found = self._balancers.get(service)
        if found is None:
            found = self._balancers[service] = OutlierEjection(
                self._new_balancer(), self.settings.outlier
            )
        return found

    def breaker(self, service: str, instance: Instance) -> CircuitBreaker:
        """The circuit breaker of one instance of ``service``."""
        per = self._breakers.setdefault(service, {})
        found = per.get(instance.id)
        if found is None:
            found = per[instance.id] = CircuitBreaker(
                self.settings.breaker, name=f"http:{service}/{instance.id}", listener=self._listener
            )
        return found

    def choose(self, service: str, tried: set[str]) -> tuple[Instance, Any]:
        """Pick an instance of ``service`` and admit the call through its breaker.

        Returns:
            the instance and its breaker ticket.

        Raises:
            NoInstanceError: the service has no instance.
            CircuitOpenError: every instance's breaker refuses calls.
        """
        instances: Sequence[Instance] = self.discovery.cached(service) or ()
        if not instances:
            raise NoInstanceError(
                f"service {service!r} has no instance up: start one, or check the store URL"
            )
        self._prune(service, instances)
        untried = [i for i in instances if i.id not in tried] if tried else instances
        candidates = list(untried or instances)
        balancer = self.balancer(service)
        while candidates:
            instance = balancer.pick(candidates)
            try:
                return instance, self.breaker(service, instance).allow()
            except CircuitOpenError:
                candidates.remove(instance)
        raise CircuitOpenError(
            f"every instance of {service!r} has an open circuit breaker: the service is failing"
        )

    def _prune(self, service: str, instances: Sequence[Instance]) -> None:
        per = self._breakers.get(service)
        if per is not None and len(per) > 2 * len(instances) + 16:
            live = {i.id for i in instances}
            self._breakers[service] = {k: v for k, v in per.items() if k in live}

    async def _service_of(self, url: httpx.URL) -> str | None:
        host = url.host
        if url.port is not None or host == "localhost" or not _SERVICE_RE.fullmatch(host):
            return None
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return None
        if "." in host:
            cached = self.discovery.cached(host)
            if cached is None:
                cached = await self.discovery.instances(host)
            if not cached:
                return None
        return host

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``: to an instance of its service, or as is for plain hosts.

        Raises:
            DeadlineExceededError: the call's timeout or the caller's deadline passed.
            NoInstanceError: the service has no instance.
            CircuitOpenError: every instance's breaker is open.
            httpx.TransportError: the last attempt's error, when retries did not help.
        """
        service = await self._service_of(request.url)
        if service is None:
            self._passthrough += 1
            return await self.pool.handle_async_request(request)
        self._calls += 1
        if self.discovery.cached(service) is None:
            await self.discovery.instances(service)  # first call: load and watch
        call = _Call(self, service, request)
        start = time.perf_counter()
        status: int | None = None
        try:
            if self._recording():
                with self._tracer.start_as_current_span(
                    f"{request.method} {service}",
                    kind=trace.SpanKind.CLIENT,
                    attributes={"http.request.method": request.method, "keel.service": service},
                ) as span:
                    response = await self._send(call)
                    span.set_attribute("http.response.status_code", response.status_code)
            else:
                response = await self._send(call)
            status = response.status_code
            return response
        finally:
            if self.metrics is not None:
                self.metrics.called(service, request.method, status, time.perf_counter() - start)

    async def _send(self, call: _Call) -> httpx.Response:
        try:
            return await self.pipeline.run(call.attempt)
        except _Retryable as exc:
            if exc.response is not None:
                return exc.response
            assert exc.error is not None
            raise exc.error from None

    def _recording(self) -> bool:
        if self._provider is not None:
            return True
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def statistics(self) -> TransportStatistics:
        """Calls by name, passed-through calls, retries, services known, open breakers."""
        open_ = sum(
            b.state is BreakerState.OPEN for per in self._breakers.values() for b in per.values()
        )
        return TransportStatistics(
            self._calls,
            self._passthrough,
            self._retry.statistics().retries,
            len(self._balancers),
            open_,
        )

    async def __aenter__(self) -> Self:
        await self.pool.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.pool.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.pool.aclose()

    def __repr__(self) -> str:
        return f"<DiscoveryTransport {self.statistics()!r}>"
