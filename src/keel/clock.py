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

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "wait_event"]


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


async def wait_event(event: asyncio.Event, timeout_s: float, clock: Clock = SYSTEM_CLOCK) -> bool:
    """Wait for ``event`` or until ``timeout_s`` passed on ``clock``; return whether it is set.

    On the system clock this is one :func:`asyncio.timeout`; on any other clock
    (a test's fake one) it races ``clock.sleep`` against the event, so loops
    that sleep "until woken or due" follow the injected time.
    """
    if event.is_set():
        return True
    if isinstance(clock, SystemClock):
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await event.wait()
        except TimeoutError:
            return False
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return event.is_set()
