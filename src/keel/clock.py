"""Time, injected.

Logic in keel never calls :func:`time.monotonic` or :func:`asyncio.sleep`
directly: it takes a :class:`Clock`. Production code gets :data:`SYSTEM_CLOCK`;
tests pass :class:`keel.testing.FakeClock` and move time by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time and of sleeping."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (for timestamps)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time as an aware UTC datetime."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, :func:`asyncio.sleep`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """Seconds from :func:`time.time`."""
        return time.time()

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep with :func:`asyncio.sleep`."""
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
"""The process-wide real clock."""
