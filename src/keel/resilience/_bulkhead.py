"""Bulkhead: at most N calls at once, a bounded FIFO queue, and a queue timeout.

The limit is either fixed or adaptive. :class:`VegasLimit` follows Netflix
concurrency-limits' ``VegasLimit`` (itself after TCP Vegas, Brakmo and
Peterson, 1995): estimate the queue a limit builds as
``limit * (1 - rtt_noload / rtt)`` and grow the limit while that queue is
short, shrink it when it is long or calls are dropped, with steps scaled by
``log10(limit)``.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock, SystemClock
from keel.errors import BulkheadFullError, ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener

__all__ = ["Bulkhead", "BulkheadStatistics", "VegasLimit", "VegasSettings"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class VegasSettings:
    """Bounds of a :class:`VegasLimit`.

    Attributes:
        initial: the starting limit.
        min_limit: never below this.
        max_limit: never above this.
        smoothing: weight of a new limit against the old one (1 = no smoothing).
    """

    initial: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    smoothing: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValidationError(
                "need 1 <= min_limit <= initial <= max_limit, got "
                f"{self.min_limit}, {self.initial}, {self.max_limit}"
            )
        if not 0 < self.smoothing <= 1:
            raise ValidationError(f"smoothing must be in (0, 1], got {self.smoothing!r}")


class VegasLimit:
    """A concurrency limit that follows latency (pure: feed it samples).

    Args:
        settings: bounds and smoothing.
    """

    def __init__(self, settings: VegasSettings | None = None) -> None:
        self.settings = settings or VegasSettings()
        self._limit = float(self.settings.initial)
        self.rtt_noload = math.inf

    @property
    def limit(self) -> int:
        """The current limit."""
        return int(self._limit)

    def update(self, rtt_s: float, inflight: int, dropped: bool) -> int:
        """Take one sample and return the new limit.

        Args:
            rtt_s: the call's latency.
            inflight: calls in flight when it started.
            dropped: the call failed from overload (timeout, rejection).

        Returns:
            the new limit.
        """
        s, limit = self.settings, self._limit
        if rtt_s > 0:
            self.rtt_noload = min(self.rtt_noload, rtt_s)
        step = max(1.0, math.log10(limit))
        if dropped:
            new = limit - step
        elif inflight * 2 < limit or rtt_s <= 0:
            return self.limit  # the application, not the limit, bounds concurrency
        else:
            queue = math.ceil(limit * (1.0 - self.rtt_noload / rtt_s))
            if queue <= step:  # threshold: log10(limit)
                new = limit + 6 * step  # beta
            elif queue < 3 * step:  # alpha
                new = limit + step
            elif queue > 6 * step:  # beta
                new = limit - step
            else:
                return self.limit
        new = min(float(s.max_limit), max(float(s.min_limit), new))
        self._limit = (1 - s.smoothing) * limit + s.smoothing * new
        return self.limit

    def __repr__(self) -> str:
        return f"VegasLimit(limit={self.limit}, rtt_noload={self.rtt_noload:.4f})"


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of a :class:`Bulkhead`."""

    active: int
    waiting: int
    limit: int
    max_active_seen: int
    rejected: int


class Bulkhead:
    """Limits concurrent calls; extra calls wait in a bounded queue.

    Args:
        max_concurrent: the fixed limit (ignored when ``adaptive`` is given).
        max_queue: callers allowed to wait for a slot (0: reject at once).
        queue_timeout_s: longest wait in the queue (``None``: as long as needed).
        adaptive: a :class:`VegasLimit` to drive the limit from latencies.
        clock: time and sleep.
        name: label for metrics and ``repr``.
        listener: metrics hook.

    Raises:
        ValidationError: a bound out of range.
    """

    def __init__(
        self,
        max_concurrent: int = 10,
        *,
        max_queue: int = 0,
        queue_timeout_s: float | None = None,
        adaptive: VegasLimit | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "bulkhead",
        listener: ResilienceListener | None = None,
    ) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise ValidationError(
                f"need max_concurrent >= 1 and max_queue >= 0, got {max_concurrent}, {max_queue}"
            )
        if queue_timeout_s is not None and not queue_timeout_s > 0:
            raise ValidationError(f"queue_timeout_s must be > 0, got {queue_timeout_s!r}")
        self._fixed = max_concurrent
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.adaptive = adaptive
        self._clock = clock
        self.name = name
        self._listener = policy_listener(listener)
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._max_seen = 0
        self._rejected = 0

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._fixed if self.adaptive is None else self.adaptive.limit

    def try_acquire(self) -> bool:
        """Take a slot now if one is free and nobody is queued; never waits."""
        if self._active < self.limit and not self._waiters:
            self._active += 1
            if self._active > self._max_seen:
                self._max_seen = self._active
            return True
        return False

    async def acquire(self, timeout_s: float | None = None) -> None:
        """Take a slot, waiting in the FIFO queue if needed.

        Args:
            timeout_s: longest wait (default: the bulkhead's ``queue_timeout_s``).

        Raises:
            BulkheadFullError: the queue is full or the wait timed out.
        """
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            raise self._full("full", "no free slot and the queue is full")
        timeout = self.queue_timeout_s if timeout_s is None else timeout_s
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        timer = None if timeout is None else self._arm(fut, timeout)
        start = self._clock.monotonic()
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # granted, but we were cancelled before we could use it
            elif not fut.done():
                fut.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)
        if self._listener is not None:
            self._listener.on_wait("bulkhead", self.name, self._clock.monotonic() - start)

    def _arm(
        self, fut: asyncio.Future[None], timeout: float
    ) -> asyncio.TimerHandle | asyncio.Task[None]:
        def expire() -> None:
            if not fut.done():
                fut.set_exception(self._full("timeout", f"no slot within {timeout:g} s"))

        loop = asyncio.get_running_loop()
        if isinstance(self._clock, SystemClock):
            return loop.call_later(timeout, expire)

        when = self._clock.monotonic() + timeout

        async def watch() -> None:
            # Measured from the arming, not from when this task first runs.
            await self._clock.sleep(when - self._clock.monotonic())
            expire()

        return loop.create_task(watch())

    def _full(self, reason: str, detail: str) -> BulkheadFullError:
        self._rejected += 1
        if self._listener is not None:
            self._listener.on_rejected("bulkhead", self.name, reason)
        return BulkheadFullError(f"bulkhead {self.name!r} (limit {self.limit}): {detail}")

    def release(self) -> None:
        """Give a slot back, handing it to the oldest waiter if the limit allows."""
        self._active -= 1
        while self._waiters and self._active < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._active += 1
                if self._active > self._max_seen:
                    self._max_seen = self._active

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot.

        Raises:
            BulkheadFullError: no slot (queue full or queue timeout).
        """
        if not self.try_acquire():
            await self.acquire()
        if self.adaptive is None:
            try:
                return await fn(*args, **kwargs)
            finally:
                self.release()
        return await self._run_adaptive(fn, *args, **kwargs)

    async def _run_adaptive(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        assert self.adaptive is not None
        inflight, start, dropped = self._active, self._clock.monotonic(), True
        try:
            result = await fn(*args, **kwargs)
            dropped = False
            return result
        except TimeoutError:
            raise
        except Exception:
            dropped = False  # a failure, not overload: the latency still tells
            raise
        finally:
            self.adaptive.update(self._clock.monotonic() - start, inflight, dropped)
            self.release()

    def statistics(self) -> BulkheadStatistics:
        """Active and waiting calls, the limit, the highest concurrency seen, rejections."""
        return BulkheadStatistics(
            self._active, len(self._waiters), self.limit, self._max_seen, self._rejected
        )

    def __repr__(self) -> str:
        return (
            f"Bulkhead(name={self.name!r}, active={self._active}/{self.limit}, "
            f"waiting={len(self._waiters)}/{self.max_queue}, rejected={self._rejected})"
        )
