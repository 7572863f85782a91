"""A clock for tests: time moves only when the test says so.

:class:`FakeClock` is a :class:`keel.clock.Clock` whose time moves only when a
test says so, so timeouts, backoffs and lease expiry can be checked without
waiting for them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only by :meth:`advance` (or by itself with ``autojump``).

    Args:
        start: the initial monotonic reading, in seconds.
        wall_start: the wall-clock time (epoch seconds) at ``start``.
        autojump: when true, a :meth:`sleep` with no other sleeper due earlier
            moves time forward at once, so tests of long waits finish instantly.
    """

    def __init__(
        self, start: float = 0.0, *, wall_start: float = 1_700_000_000.0, autojump: bool = False
    ) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._jump_pending = False

    def monotonic(self) -> float:
        """The fake monotonic reading."""
        return self._now

    def time(self) -> float:
        """The fake wall-clock reading (epoch seconds)."""
        return self._now + self._wall_offset

    def now(self) -> datetime:
        """The fake wall-clock time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        if self._autojump:
            self._schedule_jump()
        await fut

    def _schedule_jump(self) -> None:
        if not self._jump_pending:
            self._jump_pending = True
            asyncio.get_running_loop().call_soon(self._jump)

    def _jump(self) -> None:
        """Move to the earliest sleeper's time, but only once nothing else is ready to run.

        Jumping while woken tasks have not run yet would skip past sleeps they
        are about to start (trio's autojump has the same rule: jump when idle).
        """
        loop = asyncio.get_running_loop()
        if getattr(loop, "_ready", None):  # other callbacks still to run: wait for idle
            loop.call_soon(self._jump)
            return
        self._jump_pending = False
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if self._sleepers:
            self._set(max(self._now, self._sleepers[0][0]))
            if self._sleepers:
                self._schedule_jump()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper now due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards: pass seconds >= 0")
        self._set(self._now + seconds)

    def _set(self, when: float) -> None:
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._now:.3f}, sleepers={self.sleepers})"
