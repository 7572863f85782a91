"""A hierarchical timing wheel: O(1) add and cancel of timers, advanced by the caller.

The scheduler keeps one timer per job (its next fire) and one per running
execution (its timeout); thousands are added and most timeouts are cancelled,
never fired. A heap costs O(log n) per add and can only cancel with a
tombstone that stays until popped at O(log n); ``loop.call_later`` is a heap
plus a handle per timer and needs a running loop and the real clock. The wheel
(Varghese & Lauck, "Hashed and Hierarchical Timing Wheels", SOSP 1987; the
level layout of Kafka's ``TimingWheel``) keeps a timer in the slot of the
coarsest block that still resolves it and moves it down at most ``levels``
times. Nothing in the standard library or on PyPI does this with an injected
clock and cheap cancellation, so it is written here, tuned for CPython:

- A :class:`Timer` is a ``msgspec.Struct`` with ``gc=False``: the cyclic
  collector neither tracks nor walks it. With a million timers pending, half
  the cost of an add (a tracked handle) was the collector walking the live
  handles again and again; untracked, a million add+cancel cost well under
  half a ``heappush`` of a list plus a tombstone flag (docs/scheduler.md).
  The price is one rule for callers: **an item must not reference, directly
  or through other objects, its own timer or the wheel holding it** (for
  example a bound method of the wheel's owner): the collector cannot see a
  cycle through an untracked handle, so it would never be freed.
- Inside the wheel no such cycle can arise: a timer references neither
  another timer nor the wheel. Slots are plain lists (an add is one
  ``append``, and freeing a slot of a million timers is a loop, where a
  linked chain of handles was a recursion), and a cancel counts itself on a
  small :class:`_Tally` shared with the wheel.
- Level ``l >= 1`` is a dict from *absolute* block number (``tick >> bits*l``)
  to the slot, holding exactly the ``slots`` blocks in range. The common add is
  then one multiplication, ``floor``, one dict lookup and an append: a miss
  (``KeyError``) is the rare slow path (overdue, or beyond level 1), so no
  range checks. No counter is kept on that path: ``added`` and ``pending`` are
  derived from the slots' lengths (every timer added is in a slot, fired, or a
  cancelled one dropped), so reading them costs O(levels * slots).
- ``cancel`` is a tombstone: it marks the handle and counts. Dead timers are
  dropped when their slot is next touched, and a sweep on ``advance`` removes
  them once they outnumber the live ones, so memory stays bounded.
- Level 0 holds the ticks of the current level-1 block. Timers added into that
  block wait in its level-1 slot until the next :meth:`TimingWheel.advance`
  or :meth:`TimingWheel.next_deadline` moves them down.
- ``advance(now)`` serves the slot of the tick holding ``now`` too and keeps
  back its timers not yet due, so exactly the deadlines ``<= now`` fire.

The wheel holds no clock: :meth:`TimingWheel.advance` takes the current time,
so a thin loop drives it from an injected :class:`keel.clock.Clock`
(:meth:`TimingWheel.run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress, count
from math import ceil, floor
from operator import attrgetter
from typing import Generic, TypeVar

import msgspec

from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["Timer", "TimingWheel", "WheelStatistics"]

T = TypeVar("T")

_MIN_SWEEP = 1024  # dead timers tolerated before a sweep is considered
_by_deadline = attrgetter("deadline")


class _Tally:
    """The count of cancelled timers, shared by a wheel and its pending timers."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = 0


class Timer(msgspec.Struct, Generic[T], gc=False, eq=False):
    """A handle on one pending timer (made by :meth:`TimingWheel.add`); O(1) :meth:`cancel`.

    The handle is a ``msgspec.Struct`` that the cyclic garbage collector does
    not track (``gc=False``: measured, that halves the cost of an add while a
    million timers are pending). So ``item`` must not reference, directly or
    through other objects, this timer or its wheel: the collector would not
    see that cycle, and it would never be freed. Timers compare by identity.

    Attributes:
        deadline: the time it fires at (the wheel's time unit, seconds).
        item: what :meth:`TimingWheel.advance` returns when it fires.
    """

    deadline: float
    item: T
    _tally: _Tally | None  # the wheel's tally while pending; None once fired or cancelled

    @property
    def active(self) -> bool:
        """Whether the timer is still pending (not fired, not cancelled)."""
        return self._tally is not None

    def cancel(self) -> bool:
        """Cancel the timer; return whether it was still pending."""
        tally = self._tally
        if tally is None:
            return False
        self._tally = None
        tally.cancelled += 1
        return True

    def __repr__(self) -> str:
        state = "pending" if self._tally is not None else "done"
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
    farther out than the top level's span waits in the top level's last slot
    and is re-placed each time that slot comes round, so any horizon works.
    With ``levels=1`` the single wheel wraps and a far timer goes round.

    Args:
        tick_s: the width of a level-0 slot. An advance fires exactly the timers
            due by its ``now``; the tick sets how finely timers are sorted, and
            :meth:`next_deadline` may wake up to a tick early for a cascade.
        slots: slots per level, a power of two.
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
        self._per_tick = 1.0 / tick_s
        # Exact: dividing by a power of two, so floor(d * _per_block) is
        # floor(d * _per_tick) >> bits, never a later block than the timer's tick.
        self._per_block = self._per_tick / slots
        self._tick = floor(start * self._per_tick)
        self._now = start
        self._level0: list[list[Timer[T]]] = [[] for _ in range(slots)]
        self._upper: list[dict[int, list[Timer[T]]]] = []
        for level in range(1, levels):
            first = self._first_key(level, self._tick)
            self._upper.append({key: [] for key in range(first, first + slots)})
        self._window: dict[int, list[Timer[T]]] = self._upper[0] if self._upper else {}
        # Timers of ticks already served: overdue when added, or later in the tick.
        self._overdue: list[Timer[T]] = []
        self._tally = _Tally()
        # Every timer added is in a slot (or _overdue), fired, or dropped: a
        # cancelled timer taken out. So ``added`` needs no count on the hot path.
        self._fired = 0
        self._dropped = 0
        self._sweep_at = _MIN_SWEEP

    def _first_key(self, level: int, tick: int) -> int:
        """The first block in range at ``level``: level 1 keeps the current block."""
        block = tick >> (self._bits * level)
        return block if level == 1 else block + 1

    # -- adding ------------------------------------------------------------------

    def add(self, deadline: float, item: T) -> Timer[T]:
        """Schedule ``item`` to fire at ``deadline``; O(1).

        Returns:
            the timer handle (``cancel()`` it to remove it).
        """
        timer = Timer(deadline, item, self._tally)
        try:  # the common case: a level-1 block in range
            self._window[floor(deadline * self._per_block)].append(timer)
        except KeyError:
            self._place(timer, ceil(deadline * self._per_tick))
        return timer

    def _place(self, timer: Timer[T], tick: int) -> None:
        """Put a pending timer due at ``tick`` where the wheel will find it in time."""
        current = self._tick
        if tick <= current:
            self._overdue.append(timer)
            return
        bits = self._bits
        if not self._upper or tick >> bits == current >> bits:
            self._level0[tick & self._mask].append(timer)
            return
        for level, window in enumerate(self._upper, 1):
            slot = window.get(tick >> (bits * level))
            if slot is not None:
                slot.append(timer)
                return
        # Beyond the top level: its last block, re-placed when that one is entered.
        top = len(self._upper)
        self._upper[-1][self._first_key(top, current) + self.slots - 1].append(timer)

    def _replace(self, slot: list[Timer[T]]) -> None:
        """Re-place every pending timer of a slot taken out of the wheel (relative to now)."""
        per_tick, place = self._per_tick, self._place
        for timer in self._live(slot):
            place(timer, ceil(timer.deadline * per_tick))

    def _live(self, slot: list[Timer[T]]) -> list[Timer[T]]:
        """The pending timers of a slot taken out of the wheel; the rest are dropped."""
        live = [t for t in slot if t._tally is not None]
        self._dropped += len(slot) - len(live)
        return live

    # -- advancing ---------------------------------------------------------------

    def advance(self, now: float) -> list[T]:
        """Move time to ``now``; return the items of every timer due by then, in deadline order.

        Exactly the pending timers with ``deadline <= now`` fire; timers with
        equal deadlines come out in no particular order.

        Returns:
            the fired items (their timers become inactive).
        """
        # Serve every slot up to the tick holding ``now``; a timer there whose
        # deadline is still ahead waits in _overdue, so nothing fires early or late.
        target = ceil(now * self._per_tick)
        if now > self._now:
            self._now = now
        due: list[Timer[T]] = []
        self._drain_current_block()
        self._take_overdue(now, due)
        while self._tick < target:
            self._step(target, now, due)
        self._take_overdue(now, due)  # cascaded timers due at the very tick they arrived
        self._fired += len(due)
        if self._tally.cancelled - self._dropped > self._sweep_at:
            self._sweep()
        due.sort(key=_by_deadline)
        return [t.item for t in due]

    def _drain_current_block(self) -> None:
        """Move timers added into the current level-1 block down to level 0."""
        if self._upper:
            key = self._tick >> self._bits
            slot = self._window[key]
            if slot:
                self._window[key] = []
                self._replace(slot)

    def _take_overdue(self, now: float, due: list[Timer[T]]) -> None:
        """Fire the served-tick timers due by ``now``; keep the rest."""
        if self._overdue:
            keep = []
            for timer in self._live(self._overdue):
                if timer.deadline <= now:
                    timer._tally = None
                    due.append(timer)
                else:  # in the current tick, not yet due
                    keep.append(timer)
            self._overdue = keep

    def _step(self, target: int, now: float, due: list[Timer[T]]) -> None:
        """Move to the next tick at most ``target`` where a slot is busy, and serve it."""
        mask, tick = self._mask, self._tick
        if not self._upper:  # levels=1: one wheel that wraps
            i = tick & mask
            ring = self._level0[i + 1 :] + self._level0[: i + 1]
            offset = next(compress(count(1), ring), None)
            if offset is None or tick + offset > target:
                self._tick = target
            else:
                self._tick = tick + offset
                self._fire((tick + offset) & mask, now, due)
            return
        base, i = tick & ~mask, tick & mask
        j = next(compress(count(i + 1), self._level0[i + 1 :]), None)
        if j is not None and base + j <= target:
            self._tick = base + j
            self._fire(j, now, due)
            return
        if target < base + self.slots:
            self._tick = target
            return
        nxt = self._next_cascade()
        if nxt is None or nxt > target:
            self._enter(target)
            return
        self._enter(nxt)
        self._fire(nxt & mask, now, due)

    def _next_cascade(self) -> int | None:
        """The first tick where an upper level has a busy slot to move down."""
        best = None
        for level, window in enumerate(self._upper, 1):
            block = next(compress(window.keys(), window.values()), None)
            if block is not None:
                tick = block << (self._bits * level)
                best = tick if best is None or tick < best else best
        return best

    def _enter(self, tick: int) -> None:
        """Jump to ``tick`` (in a later level-1 block): slide each level's range, cascade."""
        old, slots = self._tick, self.slots
        self._tick = tick
        moving: list[list[Timer[T]]] = []
        for level in range(len(self._upper), 0, -1):  # the top first: it feeds the others
            window = self._upper[level - 1]
            was, first = self._first_key(level, old), self._first_key(level, tick)
            if first == was:
                continue
            if first - was >= slots:
                moving += window.values()
                window.clear()
            else:
                moving += [window.pop(key) for key in range(was, first)]
            for key in range(max(first, was + slots), first + slots):
                window[key] = []
        for slot in moving:
            if slot:
                self._replace(slot)
        self._drain_current_block()

    def _fire(self, index: int, now: float, due: list[Timer[T]]) -> None:
        """Serve level-0 slot ``index`` of the current tick."""
        slot = self._level0[index]
        self._level0[index] = []
        per_tick = self._per_tick
        for timer in self._live(slot):
            if timer.deadline <= now:
                timer._tally = None
                due.append(timer)
            else:  # later in this tick (to _overdue), or levels=1: a later rotation
                self._place(timer, ceil(timer.deadline * per_tick))

    def _sweep(self) -> None:
        """Drop cancelled timers from every slot (amortized: they outnumber the live)."""
        for slots in (self._level0, *(w.values() for w in self._upper), (self._overdue,)):
            for slot in slots:
                if slot:
                    slot[:] = [t for t in slot if t._tally is not None]
        self._dropped = self._tally.cancelled
        self._sweep_at = max(_MIN_SWEEP, self.pending)

    # -- reading -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many timers are waiting; O(levels * slots) (a sum of list lengths)."""
        return self._stored() - (self._tally.cancelled - self._dropped)

    def _stored(self) -> int:
        """How many timers the slots and ``_overdue`` hold, cancelled ones included."""
        stored = len(self._overdue) + sum(map(len, self._level0))
        for window in self._upper:
            stored += sum(map(len, window.values()))
        return stored

    def next_deadline(self) -> float | None:
        """When to advance next (None: no timers); for sleeping between advances.

        The earliest deadline if it lies in the current level-1 block, else the
        time of the next cascade: never later than the earliest deadline.
        """
        if not self.pending:
            return None
        self._drain_current_block()
        live = [t.deadline for t in self._overdue if t._tally is not None]
        tick, mask, level0 = self._tick, self._mask, self._level0
        if not self._upper:  # levels=1: the first busy slot, or a wrapped timer's tick
            i = tick & mask
            for offset in compress(count(1), level0[i + 1 :] + level0[: i + 1]):
                soonest = _soonest(level0[(tick + offset) & mask])
                if soonest is not None:
                    live.append(min(soonest, (tick + offset) * self.tick_s))
                    break
            return min(live, default=None)
        i = tick & mask
        for j in compress(count(i + 1), level0[i + 1 :]):
            soonest = _soonest(level0[j])
            if soonest is not None:
                live.append(soonest)
                return min(live)
        nxt = self._next_cascade()
        if nxt is not None:  # its timers are due after the tick before it began
            live.append((nxt - 1) * self.tick_s)
        return min(live, default=None)

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
        return WheelStatistics(
            pending=self.pending,
            added=self._stored() + self._fired + self._dropped,
            fired=self._fired,
            cancelled=self._tally.cancelled,
            now=self._now,
        )

    def __len__(self) -> int:
        return self.pending

    def __repr__(self) -> str:
        return (
            f"<TimingWheel tick={self.tick_s}s slots={self.slots}x{self.levels} "
            f"now={self._now:.3f} pending={self.pending}>"
        )


def _soonest(slot: list[Timer[T]]) -> float | None:
    """The earliest deadline among the pending timers of a slot."""
    return min((t.deadline for t in slot if t._tally is not None), default=None)
