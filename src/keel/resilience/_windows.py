"""Sliding windows of call outcomes for the circuit breakers (pure, no I/O).

Both windows keep running totals so a decision is O(1):

- :class:`CountWindow`: the last ``size`` outcomes in a ring of bytes
  (bit 0 failed, bit 1 slow), as Resilience4j's ``FixedSizeSlidingWindowMetrics``.
- :class:`TimeWindow`: ``size`` one-second buckets keyed by whole second, as
  Resilience4j's ``SlidingTimeWindowMetrics``; buckets older than the window
  are subtracted lazily when time moves on.
"""

from __future__ import annotations

__all__ = ["CountWindow", "TimeWindow"]


class CountWindow:
    """Outcomes of the last ``size`` calls."""

    __slots__ = ("_i", "_ring", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._i = 0
        self.calls = self.failures = self.slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one outcome, evicting the oldest when full (``now`` is unused)."""
        i = self._i
        if self.calls == self._size:
            old = self._ring[i]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        self._ring[i] = failed | (slow << 1)
        self.failures += failed
        self.slow += slow
        self._i = i + 1 if i + 1 < self._size else 0

    def roll(self, now: float) -> None:
        """Count windows do not age."""

    def reset(self) -> None:
        """Forget every outcome."""
        self._ring = bytearray(self._size)
        self._i = self.calls = self.failures = self.slow = 0


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
