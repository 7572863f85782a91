"""One timer for the deadlines of every relayed request (see ``_relay.py``).

A timer per request costs an allocation and two heap operations in the event
loop; here a request's deadline is a dict entry and one timer is armed for the
earliest, as keel's deadline watchdog does for ``Timeout``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

__all__ = ["Deadlines", "TimesOut"]


class TimesOut(Protocol):
    """What a deadline is kept for (a relayed request)."""

    def timed_out(self) -> None:
        """The deadline passed first."""


class Deadlines:
    """The deadlines of relayed requests, watched by one timer for all of them.

    A timer per request costs an allocation and two heap operations; here a
    request's deadline is a dict entry (added at start, removed at its
    response head) and one timer is armed for the earliest. When it fires,
    requests past their deadline time out, and it is armed again for the
    next one (keel's deadline watchdog does the same for ``Timeout``).

    Args:
        loop: the running loop (its clock).
    """

    __slots__ = ("_armed_at", "_due", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._due: dict[TimesOut, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def add(self, flight: TimesOut, seconds: float) -> None:
        """Watch ``flight`` for ``seconds`` from now."""
        assert self._loop is not None
        at = self._due[flight] = self._loop.time() + seconds
        if at < self._armed_at:
            self._arm(at)

    def discard(self, flight: TimesOut) -> None:
        """Stop watching ``flight`` (its head came, or it ended)."""
        self._due.pop(flight, None)

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._handle, self._armed_at = None, math.inf
        now = self._loop.time()
        late = [flight for flight, at in self._due.items() if at <= now]
        for flight in late:
            del self._due[flight]
        if self._due:
            self._arm(min(self._due.values()))
        for flight in late:
            flight.timed_out()

    def __len__(self) -> int:
        return len(self._due)

    def __repr__(self) -> str:
        return f"<Deadlines watched={len(self._due)} next_at={self._armed_at:.3f}>"
