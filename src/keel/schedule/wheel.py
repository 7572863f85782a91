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

- Level ``l >= 1`` is a dict from *absolute* block number (``tick >> bits*l``)
  to the slot, holding exactly the ``slots`` blocks in range. The common add is
  then one multiplication, ``floor``, and one dict lookup: a miss (``KeyError``)
  is the rare slow path (overdue, or beyond level 1), so no range checks.
- Slots are intrusive singly linked chains (``Timer._next``): an add is two
  stores, allocates nothing but the handle, and the collector's traversals of
  a million timers stay near allocation order (lists per slot would scatter).
- ``cancel`` is a tombstone: it marks the handle and counts. Dead timers are
  dropped in O(1) when their slot is next touched, and a sweep on ``advance``
  removes them once they outnumber the live ones, so memory stays bounded.
- Level 0 holds the ticks of the current level-1 block. Timers added into that
  block wait in its level-1 slot until the next :meth:`TimingWheel.advance`
  or :meth:`TimingWheel.next_deadline` moves them down.
- ``advance(now)`` serves the slot of the tick holding ``now`` too and keeps
  back its timers not yet due, so exactly the deadlines ``<= now`` fire.

Measured (docs/scheduler.md): a million add+cancel cost about 1.3 times a
``heappush`` of a list plus a tombstone flag (half of either is the cyclic
collector; the rest is two Python calls against one C call), 3.6 times less
than ``loop.call_later``, and 4.6 times less than the heap once its
tombstones are popped.

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

from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["Timer", "TimingWheel", "WheelStatistics"]

T = TypeVar("T")

_MIN_SWEEP = 1024  # dead timers tolerated before a sweep is considered
_by_deadline = attrgetter("deadline")


class Timer(Generic[T]):
    """A handle on one pending timer (made by :meth:`TimingWheel.add`); O(1) :meth:`cancel`.

    Attributes:
        deadline: the time it fires at (the wheel's time unit, seconds).
        item: what :meth:`TimingWheel.advance` returns when it fires.
    """

    # No __init__: add() fills the slots, which saves a Python call per timer.
    __slots__ = ("_next", "_wheel", "deadline", "item")

    _next: Timer[T] | None  # the next timer in the same slot
    _wheel: TimingWheel[T] | None  # the wheel while pending; None once fired or cancelled
    deadline: float
    item: T

    @property
    def active(self) -> bool:
        """Whether the timer is still pending (not fired, not cancelled)."""
        return self._wheel is not None

    def cancel(self) -> bool:
        """Cancel the timer; return whether it was still pending."""
        wheel = self._wheel
        if wheel is None:
            return False
        self._wheel = None
        wheel._cancelled += 1
        return True

    def __repr__(self) -> str:
        state = "pending" if self._wheel is not None else "done"
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
        self._level0: list[Timer[T] | None] = [None] * slots
        self._upper: list[dict[int, Timer[T] | None]] = []
        for level in range(1, levels):
            first = self._first_key(level, self._tick)
            self._upper.append(dict.fromkeys(range(first, first + slots)))
        self._window: dict[int, Timer[T] | None] = self._upper[0] if self._upper else {}
        # Timers of ticks already served: overdue when added, or later in the tick.
        self._overdue: list[Timer[T]] = []
        self._added = 0
        self._fired = 0
        self._cancelled = 0
        self._dropped = 0  # cancelled timers removed from the slots
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
        timer: Timer[T] = Timer()
        timer.deadline = deadline
        timer.item = item
        timer._wheel = self
        window = self._window
        try:  # the common case: a level-1 block in range
            block = floor(deadline * self._per_block)
            timer._next = window[block]
            window[block] = timer
        except KeyError:
            self._place(timer, ceil(deadline * self._per_tick))
        self._added += 1
        return timer

    def _place(self, timer: Timer[T], tick: int) -> None:
        """Put a pending timer due at ``tick`` where the wheel will find it in time."""
        current = self._tick
        if tick <= current:
            timer._next = None
            self._overdue.append(timer)
            return
        bits, slots = self._bits, self.slots
        if not self._upper or tick >> bits == current >> bits:
            level0 = self._level0
            timer._next = level0[tick & self._mask]
            level0[tick & self._mask] = timer
            return
        for level, window in enumerate(self._upper, 1):
            block = tick >> (bits * level)
            if block in window:
                timer._next = window[block]
                window[block] = timer
                return
        # Beyond the top level: its last block, re-placed when that one is entered.
        window = self._upper[-1]
        block = self._first_key(len(self._upper), current) + slots - 1
        timer._next = window[block]
        window[block] = timer

    def _replace(self, head: Timer[T] | None) -> None:
        """Re-place every pending timer of a chain (relative to the current tick)."""
        per_tick, dropped = self._per_tick, 0
        while head is not None:
            nxt = head._next
            if head._wheel is None:
                head._next = None
                dropped += 1
            else:
                self._place(head, ceil(head.deadline * per_tick))
            head = nxt
        self._dropped += dropped

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
        if self._cancelled - self._dropped > self._sweep_at:
            self._sweep()
        due.sort(key=_by_deadline)
        return [t.item for t in due]

    def _drain_current_block(self) -> None:
        """Move timers added into the current level-1 block down to level 0."""
        if self._upper:
            key = self._tick >> self._bits
            head = self._window[key]
            if head is not None:
                self._window[key] = None
                self._replace(head)

    def _take_overdue(self, now: float, due: list[Timer[T]]) -> None:
        """Fire the served-tick timers due by ``now``; keep the rest."""
        if self._overdue:
            keep = []
            for timer in self._overdue:
                if timer._wheel is None:
                    self._dropped += 1
                elif timer.deadline <= now:
                    timer._wheel = None
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
        moving: list[Timer[T]] = []
        for level in range(len(self._upper), 0, -1):  # the top first: it feeds the others
            window = self._upper[level - 1]
            was, first = self._first_key(level, old), self._first_key(level, tick)
            if first == was:
                continue
            if first - was >= slots:
                heads = list(window.values())
                window.clear()
            else:
                heads = [window.pop(key) for key in range(was, first)]
            moving += [h for h in heads if h is not None]
            for key in range(max(first, was + slots), first + slots):
                window[key] = None
        for head in moving:
            self._replace(head)
        self._drain_current_block()

    def _fire(self, index: int, now: float, due: list[Timer[T]]) -> None:
        """Serve level-0 slot ``index`` of the current tick."""
        head = self._level0[index]
        self._level0[index] = None
        per_tick, dropped = self._per_tick, 0
        while head is not None:
            nxt = head._next
            head._next = None
            if head._wheel is None:
                dropped += 1
            elif head.deadline <= now:
                head._wheel = None
                due.append(head)
            else:  # later in this tick (to _overdue), or levels=1: a later rotation
                self._place(head, ceil(head.deadline * per_tick))
            head = nxt
        self._dropped += dropped

    def _sweep(self) -> None:
        """Drop cancelled timers from every slot (amortized: they outnumber the live)."""

        def prune(head: Timer[T] | None) -> Timer[T] | None:
            kept = None
            while head is not None:
                nxt = head._next
                if head._wheel is None:
                    head._next = None
                else:
                    head._next = kept
                    kept = head
                head = nxt
            return kept

        level0 = self._level0
        for i, head in enumerate(level0):
            if head is not None:
                level0[i] = prune(head)
        for window in self._upper:
            for key, head in window.items():
                if head is not None:
                    window[key] = prune(head)
        self._overdue = [t for t in self._overdue if t._wheel is not None]
        self._dropped = self._cancelled
        self._sweep_at = max(_MIN_SWEEP, self.pending)

    # -- reading -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many timers are waiting."""
        return self._added - self._fired - self._cancelled

    def next_deadline(self) -> float | None:
        """When to advance next (None: no timers); for sleeping between advances.

        The earliest deadline if it lies in the current level-1 block, else the
        time of the next cascade: never later than the earliest deadline.
        """
        if not self.pending:
            return None
        self._drain_current_block()
        live = [t.deadline for t in self._overdue if t._wheel is not None]
        tick, mask = self._tick, self._mask
        if not self._upper:  # levels=1: the first busy slot, or a wrapped timer's tick
            i = tick & mask
            ring = self._level0[i + 1 :] + self._level0[: i + 1]
            for offset in compress(count(1), ring):
                soonest = _soonest(self._level0[(tick + offset) & mask])
                if soonest is not None:
                    live.append(min(soonest, (tick + offset) * self.tick_s))
                    break
            return min(live, default=None)
        i = tick & mask
        for j in compress(count(i + 1), self._level0[i + 1 :]):
            soonest = _soonest(self._level0[j])
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
            added=self._added,
            fired=self._fired,
            cancelled=self._cancelled,
            now=self._now,
        )

    def __len__(self) -> int:
        return self.pending

    def __repr__(self) -> str:
        return (
            f"<TimingWheel tick={self.tick_s}s slots={self.slots}x{self.levels} "
            f"now={self._now:.3f} pending={self.pending}>"
        )


def _soonest(head: Timer[T] | None) -> float | None:
    """The earliest deadline among the pending timers of a chain."""
    best = None
    while head is not None:
        if head._wheel is not None and (best is None or head.deadline < best):
            best = head.deadline
        head = head._next
    return best
