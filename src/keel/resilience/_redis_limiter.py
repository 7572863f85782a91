"""Distributed rate limiters on Redis, degrading to a local limiter.

Each decision is one Lua script run atomically by Redis (``EVALSHA``, the
script loaded on the first ``NOSCRIPT``), and time comes from Redis' own ``TIME`` inside the
script, so processes on hosts with skewed clocks still share one timeline
(Redis >= 5 replicates scripts by effects, which allows ``TIME``).

- :class:`RedisGCRA`: GCRA (ITU-T I.371) with one key holding the theoretical
  arrival time in microseconds - the algorithm of redis-cell; admits at most
  ``burst + rate * t`` in any window ``t``.
- :class:`RedisSlidingWindow`: the Cloudflare sliding-window counter, one hash
  per limiter with the current and previous window counts.

When Redis fails or does not answer within ``timeout_s``, the limiter logs
once and decides locally (go-zero ``core/limit/tokenlimit`` does the same)
with a local limiter at ``rate * local_share`` - set ``local_share`` to
``1 / instances`` to keep the global rate while degraded. Every
``retry_interval_s`` one decision tries Redis again; the first success
switches back to distributed mode and logs the recovery.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aredis
from redis.exceptions import NoScriptError, RedisError

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import RateLimitedError, ValidationError
from keel.observe.metrics import ResilienceListener
from keel.resilience._deadline import Timeout
from keel.resilience._limiters import GCRA, SlidingWindow

__all__ = ["RedisGCRA", "RedisLimiterStatistics", "RedisSlidingWindow"]

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("keel.resilience")

# KEYS[1]: the limiter key. ARGV: interval_us, tolerance_us (burst * interval), n.
# Returns 0 when admitted, else the microseconds until n would conform (>= 1):
# one integer, the cheapest reply to parse.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + n * interval
local wait = new_tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1)
return 0
"""

# KEYS[1]: the limiter hash. ARGV: window_us, limit, n. Returns as the GCRA script.
_SLIDING_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local idx = math.floor(now / window)
local h = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local i = tonumber(h[1]) or idx
local cur = tonumber(h[2]) or 0
local prev = tonumber(h[3]) or 0
if idx > i then
  if idx == i + 1 then prev = cur else prev = 0 end
  cur = 0
end
local elapsed = now - idx * window
local estimate = prev * (1 - elapsed / window) + cur
if estimate + n > limit then
  local wait = window - elapsed
  if prev > 0 and cur + n <= limit then
    wait = math.min(wait, (estimate + n - limit) * window / prev)
  end
  return math.max(1, math.ceil(wait))
end
redis.call('HSET', KEYS[1], 'i', string.format('%.0f', idx), 'c', cur + n, 'p', prev)
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * window / 1000))
return 0
"""

# Failures that mean "Redis is not there right now" (OSError covers sockets).
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RedisLimiterStatistics:
    """Counters of a Redis-backed limiter."""

    mode: str
    admitted: int
    rejected: int
    redis_decisions: int
    local_decisions: int
    outages: int


class _RedisLimiter:
    """Shared shell: the script call, the timeout, fallback and recovery."""

    kind = "redis_limiter"
    _lua = ""

    def __init__(
        self,
        redis: str | aredis.Redis,
        key: str,
        *,
        local: GCRA | SlidingWindow,
        timeout_s: float,
        retry_interval_s: float,
        clock: Clock,
        name: str,
        listener: ResilienceListener | None,
    ) -> None:
        if not (timeout_s > 0 and retry_interval_s > 0):
            raise ValidationError("timeout_s and retry_interval_s must be > 0")
        self._owned = isinstance(redis, str)
        # No socket_timeout on our own client: redis-py would arm a timer per
        # read; the one asyncio.timeout around each decision bounds it all.
        self.redis = aredis.Redis.from_url(redis) if isinstance(redis, str) else redis
        self.key = key
        self.local = local
        self.timeout_s, self.retry_interval_s = timeout_s, retry_interval_s
        self._clock, self.name, self._listener = clock, name, listener
        self._sha = hashlib.sha1(self._lua.encode()).hexdigest()
        # Redis I/O is bounded in real time whatever clock the decisions use,
        # with keel's cheap deadline scope rather than a loop timer per call.
        self._io_timeout = Timeout(timeout_s)
        self._down_since: float | None = None
        self._next_try = -math.inf
        self._admitted = self._rejected = self._remote = self._local = self._outages = 0
        self.last_retry_after_s = 0.0

    def _args(self, n: int) -> list[float]:
        """The script's ARGV for a decision on ``n`` permits (each subclass has its own)."""
        return [n]

    async def _eval(self, n: int) -> int:
        # EVALSHA straight away; load the script on the first NOSCRIPT (after
        # a Redis restart too).
        try:
            result = await self.redis.evalsha(self._sha, 1, self.key, *self._args(n))
        except NoScriptError:
            await self.redis.script_load(self._lua)
            result = await self.redis.evalsha(self._sha, 1, self.key, *self._args(n))
        return int(result)

    @property
    def mode(self) -> str:
        """``redis`` while distributed, ``local`` while degraded."""
        return "redis" if self._down_since is None else "local"

    async def try_acquire(self, n: int = 1) -> bool:
        """Decide one admission of ``n`` (one script call, or locally while degraded).

        Returns:
            whether admitted; :attr:`last_retry_after_s` says how long until it would be.
        """
        now = self._clock.monotonic()
        if self._down_since is None or now >= self._next_try:
            try:
                wait_us = await self._io_timeout.run(self._eval, n)
            except _REDIS_DOWN as exc:
                self._degrade(now, exc)
            else:
                self._recover()
                self._remote += 1
                self.last_retry_after_s = wait_us / 1e6
                return self._count(wait_us == 0)
        self._local += 1
        ok = self.local.try_acquire(n)
        self.last_retry_after_s = 0.0 if ok else self.local.retry_after(n)
        return self._count(ok)

    def _count(self, admitted: bool) -> bool:
        if admitted:
            self._admitted += 1
        else:
            self._rejected += 1
        return admitted

    def _degrade(self, now: float, exc: BaseException) -> None:
        self._next_try = now + self.retry_interval_s
        if self._down_since is None:
            self._down_since = now
            self._outages += 1
            log.warning(
                "rate limiter %r: Redis unavailable (%s: %s); deciding locally until it is back",
                self.name,
                type(exc).__name__,
                exc,
            )
            if self._listener is not None:
                self._listener.on_state_change(self.kind, self.name, "open")

    def _recover(self) -> None:
        if self._down_since is not None:
            log.warning(
                "rate limiter %r: Redis is back after %.1f s; deciding in Redis again",
                self.name,
                self._clock.monotonic() - self._down_since,
            )
            self._down_since = None
            if self._listener is not None:
                self._listener.on_state_change(self.kind, self.name, "closed")

    async def acquire(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Wait until ``n`` permits are admitted.

        Raises:
            RateLimitedError: not within ``timeout_s``.
        """
        start = self._clock.monotonic()
        while not await self.try_acquire(n):
            wait = self.last_retry_after_s
            waited = self._clock.monotonic() - start
            if math.isinf(wait) or (timeout_s is not None and waited + wait > timeout_s):
                raise self._limited(n, wait)
            await self._clock.sleep(max(wait, 1e-4))

    def _limited(self, n: int, wait: float) -> RateLimitedError:
        if self._listener is not None:
            self._listener.on_rejected(self.kind, self.name, "limited")
        return RateLimitedError(
            f"rate limiter {self.name!r} refused {n} permit(s); retry in {wait:.3f} s",
            retry_after_s=wait,
        )

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Admit one call now or fail fast (the pipeline step).

        Raises:
            RateLimitedError: refused; ``retry_after_s`` says when to come back.
        """
        if not await self.try_acquire(1):
            raise self._limited(1, self.last_retry_after_s)
        return await fn(*args, **kwargs)

    def statistics(self) -> RedisLimiterStatistics:
        """Mode, decisions by outcome and by where they were made, outages."""
        return RedisLimiterStatistics(
            self.mode, self._admitted, self._rejected, self._remote, self._local, self._outages
        )

    async def aclose(self) -> None:
        """Close the Redis client if this limiter created it."""
        if self._owned:
            await self.redis.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, key={self.key!r}, mode={self.mode}, "
            f"admitted={self._admitted}, rejected={self._rejected})"
        )


class RedisGCRA(_RedisLimiter):
    """GCRA on Redis: ``rate`` per second with bursts of ``burst``, shared by every process.

    Args:
        redis: a ``redis://`` URL (the limiter owns that client) or a
            ``redis.asyncio.Redis`` client.
        key: the Redis key shared by the processes that share the limit.
        rate: admissions per second, globally.
        burst: admissions allowed at once.
        local_share: the share of ``rate`` and ``burst`` this process admits while degraded.
        timeout_s: longest wait for Redis before deciding locally.
        retry_interval_s: how often to try Redis again while degraded.
        clock: time and sleep (for the local fallback and waits).
        name: label for logs, metrics and ``repr``.
        listener: metrics hook.

    Raises:
        ValidationError: a bound out of range.
    """

    kind = "redis_gcra"
    _lua = _GCRA_LUA

    def __init__(
        self,
        redis: str | aredis.Redis,
        key: str,
        *,
        rate: float,
        burst: float,
        local_share: float = 1.0,
        timeout_s: float = 0.1,
        retry_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "redis_gcra",
        listener: ResilienceListener | None = None,
    ) -> None:
        if not 0 < local_share <= 1:
            raise ValidationError(f"local_share must be in (0, 1], got {local_share!r}")
        local = GCRA(rate * local_share, max(1.0, burst * local_share), clock=clock)
        super().__init__(
            redis,
            key,
            local=local,
            timeout_s=timeout_s,
            retry_interval_s=retry_interval_s,
            clock=clock,
            name=name,
            listener=listener,
        )
        self.rate, self.burst = float(rate), float(burst)
        self._interval_us = max(1, round(1e6 / rate))

    def _args(self, n: int) -> list[float]:
        return [self._interval_us, round(self.burst * self._interval_us), n]


class RedisSlidingWindow(_RedisLimiter):
    """Sliding-window counter on Redis: about ``limit`` admissions per ``window_s``, globally.

    Args:
        redis: a ``redis://`` URL (the limiter owns that client) or a client.
        key: the Redis key shared by the processes that share the limit.
        limit: admissions per window, globally.
        window_s: the window.
        local_share: the share of ``limit`` this process admits while degraded.
        timeout_s: longest wait for Redis before deciding locally.
        retry_interval_s: how often to try Redis again while degraded.
        clock: time and sleep.
        name: label for logs, metrics and ``repr``.
        listener: metrics hook.

    Raises:
        ValidationError: a bound out of range.
    """

    kind = "redis_sliding_window"
    _lua = _SLIDING_LUA

    def __init__(
        self,
        redis: str | aredis.Redis,
        key: str,
        *,
        limit: int,
        window_s: float,
        local_share: float = 1.0,
        timeout_s: float = 0.1,
        retry_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "redis_sliding_window",
        listener: ResilienceListener | None = None,
    ) -> None:
        if not 0 < local_share <= 1:
            raise ValidationError(f"local_share must be in (0, 1], got {local_share!r}")
        local = SlidingWindow(max(1, int(limit * local_share)), window_s, clock=clock)
        super().__init__(
            redis,
            key,
            local=local,
            timeout_s=timeout_s,
            retry_interval_s=retry_interval_s,
            clock=clock,
            name=name,
            listener=listener,
        )
        self.limit, self.window_s = limit, float(window_s)

    def _args(self, n: int) -> list[float]:
        return [round(self.window_s * 1e6), self.limit, n]
