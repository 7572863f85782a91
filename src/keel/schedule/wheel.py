"""A hierarchical timing wheel: O(1) add and cancel of timers, advanced by the caller.

The scheduler keeps one timer per job (its next fire) and one per running
execution (its timeout); thousands of them are added and most timeouts are
cancelled, never fired. A heap costs O(log n) per add and cannot cancel
without a lazy tombstone that stays until popped; ``loop.call_later`` is a
heap plus a handle per timer. The wheel (Varghese & Lauck, "Hashed and
Hierarchical Timing Wheels", SOSP 1987; the layout of Kafka's ``TimingWheel``
and Netty's ``HashedWheelTimer``) puts a timer in the slot of its expiry tick
at the coarsest level that still resolves it: add and cancel are one dict
operation, and advancing moves each timer down at most ``levels`` times.

The wheel holds no clock: :meth:`TimingWheel.advance` takes the current time,
so a thin loop drives it from an injected :class:`keel.clock.Clock`
(:meth:`TimingWheel.run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["Timer", "TimingWheel", "WheelStatistics"]

T = TypeVar("T")


class Timer(Generic[T]):
    """A handle on one pending timer; :meth:`cancel` removes it in O(1).

    Attributes:
        deadline: the time it fires at (the wheel's time unit, seconds).
        item: what :meth:`TimingWheel.advance` returns when it fires.
    """

    __slots__ = ("_counts", "_level", "_slot", "_tick", "deadline", "item")

    def __init__(self, deadline: float, tick: int, item: T, counts: list[int]) -> None:
        self.deadline = deadline
        self.item = item
        self._tick = tick
        self._counts = counts
        self._level = 0
        self._slot: dict[Timer[T], None] | None = None

    @property
    def active(self) -> bool:
        """Whether the timer is still pending (not fired, not cancelled)."""
        return self._slot is not None

    def cancel(self) -> bool:
        """Remove the timer; return whether it was still pending."""
        slot = self._slot
        if slot is None:
            return False
        del slot[self]
        self._slot = None
        self._counts[self._level] -= 1
        return True

    def __repr__(self) -> str:
        state = "pending" if self._slot is not None else "done"
        return f"<Timer at={self.deadline:.3f} {state} item={self.item!r}>"


@dataclass(frozen=True, slots=True)
class WheelStatistics:
    """Counters of a wheel.

    Attributes:
        pending: timers not yet fired or cancelled.
        added, fired, cancelled: totals since creation (cancelled counts
            only timers that were still pending).
        now: the time the wheel was last advanced to.
    """

    pending: int
    added: int
    fired: int
    cancelled: int
    now: float


class TimingWheel(Generic[T]):
    """Timers bucketed by tick on ``levels`` wheels of ``slots`` slots each.

    Level 0 resolves one tick; level ``i`` resolves ``slots**i`` ticks. A timer
    farther out than the top level's span waits in the top level and is
    re-placed each time its slot comes round, so any horizon works.

    Args:
        tick_s: the resolution; timers fire at the first advance at or after
            their tick's end (never early).
        slots: slots per level (a power of two keeps the arithmetic cheap).
        levels: number of levels.
        start: the initial time.
    """

    def __init__(
        self, *, tick_s: float = 0.01, slots: int = 256, levels: int = 4, start: float = 0.0
    ) -> None:
        if tick_s <= 0:
            raise ValidationError(f"tick_s must be > 0, got {tick_s!r}")
        if slots < 2 or slots & (slots - 1):
            raise ValidationError(f"slots must be a power of two >= 2, got {slots!r}")
        if levels < 1:
            raise ValidationError(f"levels must be >= 1, got {levels!r}")
        self.tick_s = tick_s
        self.slots = slots
        self.levels = levels
        self._bits = slots.bit_length() - 1
        self._mask = slots - 1
        self._wheels: list[list[dict[Timer[T], None]]] = [
            [{} for _ in range(slots)] for _ in range(levels)
        ]
        self._level0 = self._wheels[0]
        self._per_tick = 1.0 / tick_s
        self._tick = math.floor(start / tick_s)
        self._now = start
        self._counts = [0] * levels  # pending timers per level
        self._added = 0
        self._fired = 0

    def add(self, deadline: float, item: T) -> Timer[T]:
        """Schedule ``item`` to fire at ``deadline``; O(1).

        Returns:
            the timer handle (``cancel()`` it to remove it).
        """
        tick = math.ceil(deadline * self._per_tick)
        timer = Timer(deadline, tick, item, self._counts)
        self._added += 1
        if 0 <= tick - self._tick < self.slots:  # the common case, inlined: level 0
            slot = self._level0[tick & self._mask]
            slot[timer] = None
            timer._slot = slot
            self._counts[0] += 1
        else:
            self._place(timer)
        return timer

    def _place(self, timer: Timer[T]) -> None:
        tick = timer._tick
        delta = tick - self._tick
        bits = self._bits
        level = 0
        if delta >= self.slots:
            # The level is the one whose span first covers delta.
            level = min((delta.bit_length() - 1) // bits, self.levels - 1)
        elif delta < 0:
            tick = self._tick  # overdue: the current slot, fired by the next advance
        slot = self._wheels[level][(tick >> (bits * level)) & self._mask]
        slot[timer] = None
        timer._slot = slot
        timer._level = level
        self._counts[level] += 1

    def advance(self, now: float) -> list[T]:
        """Move time to ``now``; return the items of every timer now due, in deadline order.

        Returns:
            the fired items (their timers become inactive).
        """
        target = math.floor(now / self.tick_s)
        due: list[Timer[T]] = []
        if now > self._now:
            self._now = now
        counts = self._counts
        self._take_current(due)
        while self._tick < target:
            if not counts[0]:
                self._skip_empty(target)
                if self._tick >= target:
                    break
            self._tick += 1
            self._cascade()
            slot = self._wheels[0][self._tick & self._mask]
            if slot:
                moving = list(slot)
                counts[0] -= len(slot)
                slot.clear()
                for timer in moving:
                    timer._slot = None
                    if timer._tick <= self._tick:
                        due.append(timer)
                    else:  # only with levels=1: a timer beyond one rotation goes round again
                        self._place(timer)
        self._take_current(due)
        self._fired += len(due)
        due.sort(key=lambda t: t.deadline)
        return [t.item for t in due]

    def _take_current(self, due: list[Timer[T]]) -> None:
        """Collect timers in the current slot that are due by now (added late or overdue)."""
        slot = self._wheels[0][self._tick & self._mask]
        if slot:
            for timer in [t for t in slot if t._tick <= self._tick]:
                timer.cancel()
                due.append(timer)

    def _skip_empty(self, target: int) -> None:
        """Jump over ticks whose lower levels hold nothing, up to the next boundary that matters."""
        counts, bits = self._counts, self._bits
        level = 0
        while level < self.levels and not counts[level]:
            level += 1
        if level == self.levels:
            self._tick = target
            return
        span = 1 << (bits * level)
        boundary = (self._tick // span + 1) * span
        self._tick = max(self._tick, min(target, boundary - 1))

    def _cascade(self) -> None:
        """At a level boundary, move the next slot of each upper level down."""
        bits, mask = self._bits, self._mask
        for level in range(1, self.levels):
            if self._tick & ((1 << (bits * level)) - 1):
                return
            slot = self._wheels[level][(self._tick >> (bits * level)) & mask]
            if slot:
                moving = list(slot)
                slot.clear()
                self._counts[level] -= len(moving)
                for timer in moving:
                    timer._slot = None
                    self._place(timer)

    @property
    def pending(self) -> int:
        """How many timers are waiting."""
        return sum(self._counts)

    def next_deadline(self) -> float | None:
        """When to advance next (None: no timers); for sleeping between advances.

        The earliest deadline in level 0, else the next cascade; at most one
        scan of level 0's slots.
        """
        if not self._counts[0]:
            if not any(self._counts):
                return None
            boundary = (self._tick // self.slots + 1) * self.slots
            return boundary * self.tick_s
        mask = self._mask
        for offset in range(self.slots):
            slot = self._level0[(self._tick + offset) & mask]
            if slot:  # (with levels=1 a slot may hold timers a rotation or more away)
                return min(min(t.deadline for t in slot), (self._tick + offset) * self.tick_s)
        return None  # unreachable: level 0 holds a timer

    async def run(
        self,
        clock: Clock,
        fire: Callable[[T], object],
        *,
        now: Callable[[], float] | None = None,
        max_sleep_s: float = 0.5,
    ) -> None:
        """Advance the wheel on ``clock`` forever, calling ``fire(item)`` for each due timer.

        Args:
            clock: the time source; the wheel's time is ``clock.time()`` unless
                ``now`` is given.
            fire: called for each due item, in deadline order.
            now: the reading to advance to (e.g. ``clock.monotonic``).
            max_sleep_s: the longest sleep between advances, so timers added
                while it sleeps are seen in time.
        """
        read = now or clock.time
        while True:
            for item in self.advance(read()):
                fire(item)
            nxt = self.next_deadline()
            wait = max_sleep_s if nxt is None else min(max_sleep_s, nxt - read())
            await clock.sleep(max(self.tick_s, wait))

    def statistics(self) -> WheelStatistics:
        """A snapshot of the counters."""
        pending = self.pending
        return WheelStatistics(
            pending=pending,
            added=self._added,
            fired=self._fired,
            cancelled=self._added - self._fired - pending,
            now=self._now,
        )

    def __len__(self) -> int:
        return self.pending

    def __repr__(self) -> str:
        return (
            f"<TimingWheel tick={self.tick_s}s slots={self.slots}x{self.levels} "
            f"now={self._now:.3f} pending={self.pending}>"
        )
