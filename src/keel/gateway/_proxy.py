"""Forwarding to upstream instances: pick, breaker, retry, deadline, streaming.

:class:`Upstreams` is the gateway's one upstream client. Per request:

1. one pass over the (already cleaned) request headers builds the upstream
   head and reads the incoming ``keel-deadline`` (``_wire.py``);
2. the budget is the earliest of the route's ``timeout_s``, the incoming
   ``keel-deadline`` and any enclosing keel deadline; it bounds everything up
   to the response head (an SSE stream or a download may run longer: after
   the head the body only has ``body_idle_timeout_s`` between chunks);
3. an instance is picked among ``Discovery.cached(service)`` (no store I/O),
   filtered by version and labels, by outlier ejection around peak-EWMA P2C,
   skipping instances whose circuit breaker refuses and those already tried;
4. the request goes out on a kept-alive HTTP/1.1 connection (``_h1.py``,
   ``_pool.py``) with the seconds left in ``keel-deadline``; a body that came
   whole in the first ASGI message is written with the head, a longer one is
   streamed from ``receive`` as it arrives (chunked when its length is unknown);
5. retries (another instance, within a shared :class:`~keel.resilience.RetryBudget`)
   happen when the request was never sent (connect failure: any method), or
   for idempotent methods whose body is still whole in hand, on a reset or a
   502/503; a streamed body is never buffered for a retry;
6. the response is streamed to ``send`` chunk by chunk; once its head has
   been sent, an upstream failure raises :class:`ResponseAbortedError` so the
   server drops the client connection instead of sending a second response.

Answers of its own: 502 (no instance, connect failure, reset, bad response),
503 (every breaker open), 504 (deadline), each with a short JSON body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from keel.balance import OutlierEjection, PeakEwma, Ticket
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CircuitOpenError, DeadlineExceededError
from keel.gateway._exchange import Exchange, UpstreamError
from keel.gateway._pool import Pool
from keel.gateway._settings import (
    ResponseAbortedError,
    UpstreamMetrics,
    UpstreamSettings,
    UpstreamStatistics,
)
from keel.gateway._wire import json_error, request_head
from keel.registry import Discovery, Instance
from keel.resilience import (
    BreakerState,
    BreakerStateChanged,
    BreakerTicket,
    CircuitBreaker,
    RetryBudget,
    Timeout,
    deadline,
)

__all__ = [
    "ResponseAbortedError",
    "Target",
    "UpstreamMetrics",
    "UpstreamStatistics",
    "Upstreams",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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


_NO_TICKET = _NoTicket()


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


class Upstreams:
    """The gateway's upstream client; ``async with Upstreams(discovery) as upstreams``.

    Args:
        discovery: a started :class:`~keel.registry.Discovery`.
        metrics: where request, retry and breaker series go (None: nowhere).
        settings: pool, breaker, ejection, retry budget (defaults: :class:`UpstreamSettings`).
        clock: time source of breakers, balancers and the retry budget.
    """

    def __init__(
        self,
        discovery: Discovery,
        *,
        metrics: UpstreamMetrics | None = None,
        settings: UpstreamSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.discovery = discovery
        self.metrics = metrics
        self.settings = s = settings or UpstreamSettings()
        self._clock = clock or SYSTEM_CLOCK
        self.pool = Pool(
            max_per_instance=s.max_connections_per_instance,
            max_idle_per_instance=s.max_idle_per_instance,
            idle_timeout_s=s.idle_timeout_s,
            connect_timeout_s=s.connect_timeout_s,
        )
        self.budget = RetryBudget(s.budget, clock=self._clock)
        self._balancers: dict[str, OutlierEjection] = {}
        self._breakers: dict[str, dict[str, CircuitBreaker]] = {}
        self._filtered: dict[int, tuple[Target, object, tuple[Instance, ...]]] = {}
        self._fixed: dict[str, _Fixed] = {}
        self._timeouts: dict[float, Timeout] = {}  # per route timeout: keel's cheapest deadline
        self.counts = dict.fromkeys(
            ("requests", "websockets", "retries", "failed", "unavailable", "timed_out", "aborted"),
            0,
        )

    # -- choosing an instance ----------------------------------------------------

    async def instances(self, target: Target) -> tuple[Any, ...]:
        """The candidates of ``target``: cached discovery results, filtered, or the fixed URL."""
        if target.url is not None:
            return (self._fixed_endpoint(target.url),)
        service = target.service
        assert service is not None
        cached = self.discovery.cached(service)
        if cached is None:
            cached = await self.discovery.instances(service)  # first call: load and watch
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
                return instance, self._breaker(name, instance).allow(), _NO_TICKET
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

    def _timeout(self, seconds: float) -> Timeout:
        found = self._timeouts.get(seconds)
        if found is None:
            if len(self._timeouts) > 256:
                self._timeouts.clear()
            found = self._timeouts[seconds] = Timeout(seconds, clock=self._clock)
        return found

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

    def _fixed_endpoint(self, url: str) -> _Fixed:
        found = self._fixed.get(url)
        if found is None:
            found = self._fixed[url] = _parse_fixed(url)
        return found

    # -- forwarding ----------------------------------------------------------------

    async def forward(
        self,
        target: Target,
        method: str,
        path_qs: bytes,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> int:
        """Forward one request to an instance of ``target`` and stream the answer back.

        Args:
            target: the route's upstream and policies.
            method: the request method.
            path_qs: the upstream path with its query string (``/users/7?x=1``).
            headers: the final upstream request headers, names lowercase
                (hop-by-hop ones already removed by the caller).
            receive: the ASGI receive of the client request (its body is streamed).
            send: the ASGI send of the client response.

        Returns:
            the status sent to the client (the upstream's, or 502/503/504).

        Raises:
            ResponseAbortedError: the upstream failed after the head was sent.
        """
        self.counts["requests"] += 1
        start = time.perf_counter()
        if target.url is not None:
            path_qs = self._fixed_endpoint(target.url).base_path + path_qs
        head = request_head(method, path_qs, headers)
        budget = target.timeout_s
        if head.deadline_s is not None and head.deadline_s < budget:
            budget = head.deadline_s
        upstream = target.service or target.url or "?"
        if budget <= 0:
            return await self._answer(target, upstream, 504, "the deadline had passed", start, send)
        exchange = Exchange(self, target, method, head, receive)
        try:
            await exchange.open()
            if budget == target.timeout_s:
                await self._timeout(budget).run(exchange.attempts)
            else:
                async with deadline(budget):
                    await exchange.attempts()
        except DeadlineExceededError:
            exchange.abandon(timed_out=True)
            detail = f"no response from {upstream!r} within {budget:g} s"
            return await self._answer(target, upstream, 504, detail, start, send)
        except UpstreamError as exc:
            exchange.abandon(timed_out=False)
            return await self._answer(target, upstream, exc.status, exc.detail, start, send)
        except BaseException:
            exchange.abandon(timed_out=False)
            raise
        status = exchange.status
        try:
            await exchange.respond(send, self.settings.body_idle_timeout_s)
        except UpstreamError as exc:  # nothing was sent yet
            return await self._answer(target, upstream, exc.status, exc.detail, start, send)
        except ResponseAbortedError:
            self.counts["aborted"] += 1
            raise
        if self.metrics is not None:
            self.metrics.upstream_request(
                target.route, upstream, status, time.perf_counter() - start
            )
        return status

    async def _answer(
        self, target: Target, upstream: str, status: int, detail: str, start: float, send: Send
    ) -> int:
        key = {502: "failed", 503: "unavailable", 504: "timed_out"}.get(status)
        if key is not None:
            self.counts[key] += 1
        if self.metrics is not None:
            self.metrics.upstream_request(
                target.route, upstream, status, time.perf_counter() - start
            )
        if status == 0:
            return status  # the client went away: nothing to answer
        return await json_error(send, status, detail)

    async def websocket(
        self,
        target: Target,
        path_qs: bytes,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> None:
        """Pass a WebSocket session through to an instance of ``target`` (see ``_ws.py``)."""
        from keel.gateway._ws import pass_through  # websockets loads on first use

        self.counts["websockets"] += 1
        await pass_through(self, target, path_qs, headers, receive, send)

    def retried(self, target: Target) -> bool:
        """Spend the retry budget for one more attempt of ``target`` (and count it)."""
        if not self.budget.try_withdraw():
            return False
        self.counts["retries"] += 1
        if self.metrics is not None:
            self.metrics.upstream_retry(target.route, target.service or target.url or "?")
        return True

    def statistics(self) -> UpstreamStatistics:
        """Counters, open breakers, ejected instances and pool figures."""
        c = self.counts
        breakers = sum(
            b.state is BreakerState.OPEN for per in self._breakers.values() for b in per.values()
        )
        ejected = sum(len(b.statistics().ejected) for b in self._balancers.values())
        pool = self.pool.statistics()
        return UpstreamStatistics(
            c["requests"],
            c["websockets"],
            c["retries"],
            c["failed"],
            c["unavailable"],
            c["timed_out"],
            c["aborted"],
            breakers,
            ejected,
            pool.open,
            pool.idle,
            pool.opened,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pool.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Upstreams requests={s.requests} retries={s.retries} failed={s.failed} "
            f"breakers_open={s.breakers_open} connections={s.connections_open}>"
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
