"""Rate and concurrency limits per route, consumer and client address; 429 with Retry-After.

:class:`Limits` is one per gateway process and outlives publishes: limiter
state lives under ``(route, limit settings, key)``, so a publish that leaves a
route's limit unchanged keeps its counts, and a changed limit starts fresh.

- Local limits are GCRA (:class:`keel.resilience.GCRA`) held in a
  :class:`keel.resilience.KeyedLimiter` per route and limit (bounded LRU of
  keys, ``max_keys``: a flood of client addresses cannot grow memory).
- ``shared: true`` limits use :class:`keel.resilience.RedisGCRA` on the
  document's ``redis_url`` (one script call per decision, Redis' clock), so
  every gateway process counts against one budget; when Redis is down each
  process degrades to a local GCRA at ``local_share`` of the rate and
  recovers by itself. Without ``redis_url`` shared limits count locally.
- Concurrency is per route and per process: a counter taken on admission and
  given back by :meth:`Admission.release`.

Order of checks, cheapest and most specific first so a refused client does not
spend the route's budget: concurrency, then ``client``, ``consumer``, ``route``.
A request refused by a later limit has still spent the earlier ones' tokens
(GCRA has no refund; the error is on the strict side).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from keel.clock import SYSTEM_CLOCK, Clock
from keel.gateway._auth import Consumer
from keel.gateway._policy import RateLimit, RouteLimits
from keel.resilience import GCRA, KeyedLimiter, RedisGCRA

if TYPE_CHECKING:
    import redis.asyncio as aredis

__all__ = ["ALLOWED", "Admission", "Limits", "RateLimit", "RouteLimits", "retry_after_header"]

Reason = Literal["", "route", "consumer", "client", "concurrency"]
_ORDER = {"client": 0, "consumer": 1, "route": 2}
_MAX_COMPILED = 4096


def retry_after_header(seconds: float) -> int:
    """``Retry-After`` in whole seconds: rounded up, at least 1 (RFC 9110 §10.2.3)."""
    if not math.isfinite(seconds):
        return 3600
    return max(1, math.ceil(seconds))


@dataclass(slots=True, eq=False)
class Admission:
    """The decision on one request.

    Attributes:
        allowed: whether the request may go on.
        retry_after_s: when refused, whole seconds to put in ``Retry-After`` (>= 1).
        reason: which limit refused (``route``, ``consumer``, ``client``, ``concurrency``).
    """

    allowed: bool
    retry_after_s: int = 0
    reason: Reason = ""
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give back the concurrency slot of an admitted request (idempotent)."""
        release, self._release = self._release, None
        if release is not None:
            release()


ALLOWED = Admission(True)
"""The shared admission of requests with no concurrency limit (release is a no-op)."""


class _Rate:
    """One compiled rate limit of one route: local GCRAs per key, or Redis ones."""

    __slots__ = ("_limits", "by", "local", "prefix", "spec")

    def __init__(self, route: str, spec: RateLimit, owner: Limits) -> None:
        self.spec = spec
        self.by = spec.by
        rate, burst, clock = spec.rate, float(spec.burst_size), owner.clock
        self.local = KeyedLimiter(lambda: GCRA(rate, burst, clock=clock), max_keys=owner.max_keys)
        self.prefix = (
            f"{owner.redis_prefix}{route}:{spec.by}:{spec.requests}/{spec.per_s:g}/{burst:g}:"
        )
        self._limits = owner

    def key(self, consumer: Consumer | None, client: str) -> str:
        if self.by == "route":
            return ""
        if self.by == "consumer" and consumer is not None:
            return "u:" + consumer.name
        return "c:" + client

    async def check(self, consumer: Consumer | None, client: str) -> float | None:
        """None if admitted, else seconds until it would be."""
        key = self.key(consumer, client)
        if self.spec.shared and self._limits.redis is not None:
            limiter = self._limits.redis_limiter(self.prefix + key, self.spec)
            if await limiter.try_acquire():
                return None
            return limiter.last_retry_after_s
        if self.local.try_acquire(key):
            return None
        return self.local.retry_after(key)


class Limits:
    """Rate and concurrency limits of a gateway process; see the module docstring.

    Args:
        redis_url: Redis for ``shared`` limits (None: shared limits count locally).
        clock: time source of the local limiters.
        max_keys: per limit, how many keys (consumers, addresses) are remembered.
        local_share: share of a shared limit each process admits while Redis is down
            (``1 / number of gateways`` keeps the global rate).
        redis_timeout_s: longest wait for Redis before deciding locally (a busy Redis
            should not turn every gateway into a local limiter at once).
        redis_prefix: prefix of the Redis keys.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_keys: int = 10_000,
        local_share: float = 1.0,
        redis_timeout_s: float = 0.25,
        redis_prefix: str = "keel:gateway:rl:",
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.local_share = local_share
        self.redis_timeout_s = redis_timeout_s
        self.redis_prefix = redis_prefix
        self.redis_url = redis_url
        self.redis: aredis.Redis | None = None
        if redis_url is not None:
            import redis.asyncio as aredis

            self.redis = aredis.Redis.from_url(redis_url)
        self._compiled: OrderedDict[tuple[str, int], tuple[RouteLimits, tuple[_Rate, ...]]] = (
            OrderedDict()
        )
        self._rates: OrderedDict[tuple[str, str], _Rate] = OrderedDict()
        self._redis_limiters: OrderedDict[str, RedisGCRA] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self.refused: dict[str, int] = {"route": 0, "consumer": 0, "client": 0, "concurrency": 0}

    async def aclose(self) -> None:
        """Close the Redis connection."""
        if self.redis is not None:
            await self.redis.aclose()

    async def __aenter__(self) -> Limits:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def redis_limiter(self, key: str, spec: RateLimit) -> RedisGCRA:
        """The Redis GCRA of one key (an LRU of at most ``max_keys``)."""
        limiter = self._redis_limiters.get(key)
        if limiter is None:
            assert self.redis is not None
            limiter = RedisGCRA(
                self.redis,
                key,
                rate=spec.rate,
                burst=spec.burst_size,
                local_share=self.local_share,
                timeout_s=self.redis_timeout_s,
                clock=self.clock,
                name=key,
            )
            self._redis_limiters[key] = limiter
            if len(self._redis_limiters) > self.max_keys:
                self._redis_limiters.popitem(last=False)
        else:
            self._redis_limiters.move_to_end(key)
        return limiter

    def _compile(self, route: str, limits: RouteLimits) -> tuple[_Rate, ...]:
        slot = (route, id(limits))
        hit = self._compiled.get(slot)
        if hit is not None and hit[0] is limits:
            return hit[1]
        rates = []
        for spec in sorted(limits.rate, key=lambda s: _ORDER[s.by]):
            state_key = (route, spec.model_dump_json())
            rate = self._rates.get(state_key)
            if rate is None:
                rate = self._rates[state_key] = _Rate(route, spec, self)
                if len(self._rates) > _MAX_COMPILED:  # limits of routes long gone
                    self._rates.popitem(last=False)
            else:
                self._rates.move_to_end(state_key)
            rates.append(rate)
        self._compiled[slot] = (limits, tuple(rates))
        if len(self._compiled) > _MAX_COMPILED:
            self._compiled.popitem(last=False)
        return tuple(rates)

    async def admit(
        self, route: str, limits: RouteLimits, consumer: Consumer | None, client: str
    ) -> Admission:
        """Decide one request of ``route``; release the admission when the request ends.

        Args:
            route: the route id.
            limits: the route's limits.
            consumer: the authenticated consumer, if any.
            client: the client address (:func:`~keel.gateway._headers.client_address`).
        """
        release = None
        if limits.concurrency is not None:
            in_flight = self._in_flight.get(route, 0)
            if in_flight >= limits.concurrency:
                self.refused["concurrency"] += 1
                return Admission(False, 1, "concurrency")
            self._in_flight[route] = in_flight + 1
            release = self._releaser(route)
        for rate in self._compile(route, limits):
            wait = await rate.check(consumer, client)
            if wait is not None:
                if release is not None:
                    release()
                self.refused[rate.by] += 1
                return Admission(False, retry_after_header(wait), rate.by)
        return ALLOWED if release is None else Admission(True, 0, "", release)

    def try_admit(
        self, route: str, limits: RouteLimits, consumer: Consumer | None, client: str
    ) -> Admission | None:
        """:meth:`admit` without waiting, or None when a limit must ask Redis.

        The relay's path: a route whose limits are all local is decided here in
        the caller's step (a refusal is counted as :meth:`admit` counts it).
        """
        rates = self._compile(route, limits)
        if self.redis is not None and any(rate.spec.shared for rate in rates):
            return None
        release = None
        if limits.concurrency is not None:
            in_flight = self._in_flight.get(route, 0)
            if in_flight >= limits.concurrency:
                self.refused["concurrency"] += 1
                return Admission(False, 1, "concurrency")
            self._in_flight[route] = in_flight + 1
            release = self._releaser(route)
        for rate in rates:
            key = rate.key(consumer, client)
            if not rate.local.try_acquire(key):
                if release is not None:
                    release()
                self.refused[rate.by] += 1
                return Admission(False, retry_after_header(rate.local.retry_after(key)), rate.by)
        return ALLOWED if release is None else Admission(True, 0, "", release)

    def _releaser(self, route: str) -> Callable[[], None]:
        def release() -> None:
            self._in_flight[route] -= 1

        return release

    def in_flight(self, route: str) -> int:
        """Requests of ``route`` admitted and not yet released."""
        return self._in_flight.get(route, 0)

    def statistics(self) -> dict[str, Any]:
        """Refusals by reason, keys remembered, Redis limiters and their modes."""
        return {
            "refused": dict(self.refused),
            "redis_limiters": len(self._redis_limiters),
            "degraded": sum(1 for r in self._redis_limiters.values() if r.mode == "local"),
        }

    def __repr__(self) -> str:
        return f"Limits(redis={self.redis_url is not None}, refused={self.refused})"
