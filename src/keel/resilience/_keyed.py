"""Per-key rate limiting (per user, per IP) with bounded memory, and the shaper.

:class:`KeyedLimiter` keeps one limiter per key in an LRU of at most
``max_keys`` entries: the least recently used key is forgotten first, and a
forgotten key starts again with a full bucket (so the bound trades a little
leniency for memory; size it above the number of keys active per window).

:class:`LeakyBucketShaper` is the leaky bucket *as a queue* (Tanenbaum,
"Computer Networks", 5.4): instead of rejecting, it delays each call to its
slot on a smooth ``rate``, rejecting only when the delay would exceed
``max_delay_s``. The queue is virtual: one "next free slot" instant.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, ParamSpec, Protocol, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import RateLimitedError, ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener

__all__ = ["KeyedLimiter", "KeyedStatistics", "LeakyBucketShaper", "LocalLimiter"]

P = ParamSpec("P")
T = TypeVar("T")


class LocalLimiter(Protocol):
    """What :class:`KeyedLimiter` needs of the limiters it holds."""

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` permits now if free."""
        ...

    def retry_after(self, n: int = 1) -> float:
        """Seconds until ``n`` permits would be free."""
        ...

    async def acquire(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Wait for ``n`` permits."""
        ...


L = TypeVar("L", bound=LocalLimiter)


@dataclass(frozen=True, slots=True)
class KeyedStatistics:
    """Counters of a :class:`KeyedLimiter`."""

    keys: int
    max_keys: int
    evictions: int


class KeyedLimiter(Generic[L]):
    """One limiter per key, at most ``max_keys`` of them (LRU).

    Args:
        factory: builds the limiter for a new key, e.g.
            ``lambda: TokenBucket(10, 20, clock=clock)``.
        max_keys: the LRU bound.

    Raises:
        ValidationError: ``max_keys`` < 1.
    """

    def __init__(self, factory: Callable[[], L], *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValidationError(f"max_keys must be >= 1, got {max_keys!r}")
        self._factory = factory
        self.max_keys = max_keys
        self._limiters: OrderedDict[Hashable, L] = OrderedDict()
        self._evictions = 0

    def limiter(self, key: Hashable) -> L:
        """The limiter of ``key`` (created, and the oldest key evicted, as needed)."""
        limiters = self._limiters
        found = limiters.get(key)
        if found is not None:
            limiters.move_to_end(key)
            return found
        created = limiters[key] = self._factory()
        if len(limiters) > self.max_keys:
            limiters.popitem(last=False)
            self._evictions += 1
        return created

    def try_acquire(self, key: Hashable, n: int = 1) -> bool:
        """Take ``n`` permits of ``key`` now if free."""
        return self.limiter(key).try_acquire(n)

    def retry_after(self, key: Hashable, n: int = 1) -> float:
        """Seconds until ``key`` could admit ``n``."""
        return self.limiter(key).retry_after(n)

    async def acquire(self, key: Hashable, n: int = 1, timeout_s: float | None = None) -> None:
        """Wait for ``n`` permits of ``key``.

        Raises:
            RateLimitedError: not within ``timeout_s``.
        """
        await self.limiter(key).acquire(n, timeout_s)

    def __len__(self) -> int:
        return len(self._limiters)

    def statistics(self) -> KeyedStatistics:
        """Keys held, the bound, and evictions so far."""
        return KeyedStatistics(len(self._limiters), self.max_keys, self._evictions)

    def __repr__(self) -> str:
        return (
            f"KeyedLimiter(keys={len(self._limiters)}, max_keys={self.max_keys}, "
            f"evictions={self._evictions})"
        )


class LeakyBucketShaper:
    """Delays calls to a smooth ``rate`` (leaky bucket as a queue).

    Args:
        rate: calls (permits) per second leaving the bucket.
        max_delay_s: longest delay handed out; beyond it calls are rejected.
        clock: time and sleep.
        name: label for metrics and ``repr``.
        listener: metrics hook.

    Raises:
        ValidationError: rate or max delay out of range.
    """

    def __init__(
        self,
        rate: float,
        *,
        max_delay_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "shaper",
        listener: ResilienceListener | None = None,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValidationError(f"rate must be finite and > 0, got {rate!r}")
        if not max_delay_s >= 0:
            raise ValidationError(f"max_delay_s must be >= 0, got {max_delay_s!r}")
        self.rate, self.max_delay_s = float(rate), float(max_delay_s)
        self._clock = clock
        self.name = name
        self._listener = policy_listener(listener)
        self._next = clock.monotonic()
        self.admitted = self.rejected = 0

    def reserve(self, n: int = 1, max_delay_s: float | None = None) -> float | None:
        """Book the next slot for ``n`` permits (pure: no sleeping).

        Returns:
            how long the caller must wait before going, or ``None`` if that
            would exceed the max delay (nothing is booked then).
        """
        now = self._clock.monotonic()
        start = max(self._next, now)
        delay = start - now
        if delay > (self.max_delay_s if max_delay_s is None else max_delay_s) + 1e-9:
            self.rejected += 1
            return None
        self._next = start + n / self.rate
        self.admitted += 1
        return delay

    def try_acquire(self, n: int = 1) -> bool:
        """Go now if the bucket is empty; never waits."""
        return self.reserve(n, 0.0) is not None

    def retry_after(self, n: int = 1) -> float:
        """Seconds until a call would go without delay."""
        return max(0.0, self._next - self._clock.monotonic())

    async def acquire(self, n: int = 1, timeout_s: float | None = None) -> None:
        """Wait for this call's slot.

        Raises:
            RateLimitedError: the slot is further away than the max delay (or ``timeout_s``).
        """
        limit = self.max_delay_s if timeout_s is None else min(timeout_s, self.max_delay_s)
        delay = self.reserve(n, limit)
        if delay is None:
            if self._listener is not None:
                self._listener.on_rejected("shaper", self.name, "limited")
            wait = self.retry_after(n)
            raise RateLimitedError(
                f"shaper {self.name!r} is {wait:.3f} s behind", retry_after_s=wait
            )
        if delay > 0:
            if self._listener is not None:
                self._listener.on_wait("shaper", self.name, delay)
            await self._clock.sleep(delay)

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Wait for a slot, then await ``fn``.

        Raises:
            RateLimitedError: the slot is further away than the max delay.
        """
        await self.acquire(1)
        return await fn(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"LeakyBucketShaper(name={self.name!r}, rate={self.rate:g}/s, "
            f"backlog={self.retry_after():.3f}s, admitted={self.admitted}, "
            f"rejected={self.rejected})"
        )
