"""Sliding windows of call outcomes for the circuit breakers (pure, no I/O).

Both windows keep running totals so a decision is O(1):

- :class:`CountWindow`: the last ``size`` outcomes, as Resilience4j's
  ``FixedSizeSlidingWindowMetrics`` (stored sparsely: see the class).
- :class:`TimeWindow`: ``size`` one-second buckets keyed by whole second, as
  Resilience4j's ``SlidingTimeWindowMetrics``; buckets older than the window
  are subtracted lazily when time moves on.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CountWindow", "TimeWindow"]


class CountWindow:
    """Outcomes of the last ``size`` calls.

    Only bad outcomes (failed or slow) are stored, with their call sequence
    number, so a good call costs one increment of :attr:`seq` - the breaker's
    hot path does exactly that - and old bad outcomes leave lazily in
    :meth:`prune`.
    """

    __slots__ = ("_size", "bad", "failures", "seq", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self.seq = 0
        self.bad: deque[tuple[int, bool, bool]] = deque()
        self.failures = self.slow = 0

    @property
    def calls(self) -> int:
        """Calls in the window."""
        return self.seq if self.seq < self._size else self._size

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one outcome, evicting the oldest when full (``now`` is unused)."""
        self.seq += 1
        if failed or slow:
            self.bad.append((self.seq, failed, slow))
            self.failures += failed
            self.slow += slow
        self.prune()

    def prune(self) -> None:
        """Forget bad outcomes that slid out of the window."""
        bad, cutoff = self.bad, self.seq - self._size
        while bad and bad[0][0] <= cutoff:
            _, failed, slow = bad.popleft()
            self.failures -= failed
            self.slow -= slow

    def roll(self, now: float) -> None:
        """Count windows do not age with time."""
        self.prune()

    def reset(self) -> None:
        """Forget every outcome."""
        self.bad.clear()
        self.seq = self.failures = self.slow = 0


class TimeWindow:
    """Outcomes of the calls of the last ``size`` seconds (one bucket per second)."""

    __slots__ = (
        "_b_calls",
        "_b_failures",
        "_b_slow",
        "_last",
        "_size",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, size: int) -> None:
        self._size = size
        self._b_calls = [0] * size
        self._b_failures = [0] * size
        self._b_slow = [0] * size
        self._last = -1
        self.calls = self.failures = self.slow = 0

    def roll(self, now: float) -> None:
        """Drop the buckets that slid out of the window by ``now``."""
        second = int(now)
        last = self._last
        if second <= last:
            return
        if last < 0 or second - last >= self._size:
            self.reset()
        else:
            for s in range(last + 1, second + 1):
                idx = s % self._size
                self.calls -= self._b_calls[idx]
                self.failures -= self._b_failures[idx]
                self.slow -= self._b_slow[idx]
                self._b_calls[idx] = self._b_failures[idx] = self._b_slow[idx] = 0
        self._last = second

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one outcome at time ``now``."""
        self.roll(now)
        idx = self._last % self._size
        self._b_calls[idx] += 1
        self._b_failures[idx] += failed
        self._b_slow[idx] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def reset(self) -> None:
        """Forget every outcome."""
        size = self._size
        self._b_calls, self._b_failures, self._b_slow = [0] * size, [0] * size, [0] * size
        self.calls = self.failures = self.slow = 0
