"""The timing wheel: add/cancel/advance, any horizon, never early, against a list model."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import ValidationError
from keel.schedule.wheel import TimingWheel
from keel.testing import FakeClock


def test_fires_in_order_never_early_at_most_a_tick_late() -> None:
    """Random timers over several levels fire in deadline order, within one tick."""
    rng = random.Random(7)
    wheel: TimingWheel[int] = TimingWheel(tick_s=0.01, slots=8, levels=3)
    deadlines = [rng.uniform(0, 50) for _ in range(2000)]
    timers = [wheel.add(d, i) for i, d in enumerate(deadlines)]
    for timer in timers[::3]:
        assert timer.cancel()
    assert not timers[0].cancel(), "second cancel is a no-op"
    fired: list[int] = []
    now = 0.0
    while now < 60:
        now += rng.choice([0.003, 0.01, 0.5, 2.0])
        batch = wheel.advance(now)
        assert all(deadlines[i] <= now for i in batch)
        assert [deadlines[i] for i in batch] == sorted(deadlines[i] for i in batch)
        fired += batch
        assert all(d > now - 0.01 for t, d in zip(timers, deadlines, strict=True) if t.active)
    assert sorted(fired) == [i for i in range(2000) if i % 3]
    stats = wheel.statistics()
    assert (stats.pending, stats.added, stats.fired, stats.cancelled) == (0, 2000, 1333, 667)


def test_far_and_overdue_timers() -> None:
    """A timer beyond the top level's span and one already overdue both fire correctly."""
    wheel: TimingWheel[str] = TimingWheel(tick_s=1.0, slots=4, levels=2, start=100.0)
    wheel.add(100.0 + 10_000, "far")
    wheel.add(50.0, "overdue")
    assert wheel.advance(100.0) == ["overdue"]
    assert wheel.advance(100.0 + 9_999) == []
    assert wheel.advance(100.0 + 10_000) == ["far"]
    assert len(wheel) == 0
    assert "pending=0" in repr(wheel)


def test_bad_settings() -> None:
    """Slots must be a power of two; tick and levels positive."""
    with pytest.raises(ValidationError, match="power of two"):
        TimingWheel(slots=100)
    with pytest.raises(ValidationError, match="tick_s"):
        TimingWheel(tick_s=0)


async def test_run_under_fake_clock() -> None:
    """run() fires timers as the FakeClock autojumps, including ones added while it sleeps."""
    clock = FakeClock(autojump=True, wall_start=0.0)
    wheel: TimingWheel[str] = TimingWheel(tick_s=0.1)
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()

    def fire(item: str) -> None:
        fired.append((item, clock.time()))
        if item == "a":
            wheel.add(clock.time() + 30, "c")
        if item == "c":
            done.set()

    wheel.add(5, "a")
    wheel.add(7.25, "b")
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        task = tg.create_task(wheel.run(clock, fire, max_sleep_s=60))
        await done.wait()
        task.cancel()
    assert [name for name, _ in fired] == ["a", "b", "c"]
    for (_, at), due in zip(fired, (5, 7.25, 35), strict=True):
        assert due <= at < due + 0.2


def test_fired_timers_are_done() -> None:
    """A fired timer is inactive and cancel() on it returns False; so does a second cancel."""
    wheel: TimingWheel[str] = TimingWheel(tick_s=0.5, slots=4, levels=2)
    a, b = wheel.add(1.0, "a"), wheel.add(30.0, "b")
    assert (a.active, b.active) == (True, True)
    assert wheel.advance(1.0) == ["a"]
    assert not a.active and not a.cancel()
    assert b.cancel() and not b.cancel() and not b.active
    assert "done" in repr(a) and "item='a'" in repr(a)
    stats = wheel.statistics()
    assert (stats.pending, stats.added, stats.fired, stats.cancelled) == (0, 2, 1, 1)


def test_batch_in_deadline_order_across_levels() -> None:
    """One advance over many levels returns the batch sorted by deadline, ties included."""
    wheel: TimingWheel[str] = TimingWheel(tick_s=1.0, slots=4, levels=3)
    for name, at in [("e", 60.5), ("b", 3.0), ("d", 17.0), ("a", 0.5), ("c", 3.0), ("f", 63.0)]:
        wheel.add(at, name)
    out = wheel.advance(100.0)
    assert out[:2] == ["a", "b"] or out[:2] == ["a", "c"]
    assert sorted(out[1:3]) == ["b", "c"] and out[3:] == ["d", "e", "f"]


def test_overdue_and_current_tick() -> None:
    """Timers in the past or in the current tick fire on the next advance, never before now."""
    wheel: TimingWheel[str] = TimingWheel(tick_s=1.0, slots=4, levels=2, start=10.0)
    wheel.add(3.0, "past")
    wheel.add(10.0, "now")
    wheel.add(10.5, "this tick")
    assert wheel.next_deadline() == 3.0
    assert wheel.advance(10.0) == ["past", "now"]
    assert wheel.next_deadline() == 10.5
    assert wheel.advance(10.4) == []
    assert wheel.advance(10.5) == ["this tick"], "fires at its deadline, not at the tick's end"
    assert wheel.next_deadline() is None


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_far_timers_fire_on_their_tick(levels: int) -> None:
    """Timers far beyond the top level's span are re-placed and fire exactly on their tick."""
    wheel: TimingWheel[int] = TimingWheel(tick_s=1.0, slots=4, levels=levels)
    deadlines = [3, 4, 5, 16, 17, 63, 64, 65, 257, 1000, 4099]
    for d in deadlines:
        wheel.add(float(d), d)
    for d in deadlines:
        assert wheel.advance(d - 1.0) == []
        nxt = wheel.next_deadline()
        assert nxt is not None and nxt <= d
        assert wheel.advance(float(d)) == [d]
    assert len(wheel) == 0 and wheel.next_deadline() is None


def test_next_deadline_never_after_the_earliest() -> None:
    """next_deadline() is never later than the earliest pending deadline, whatever its level."""
    wheel: TimingWheel[str] = TimingWheel(tick_s=1.0, slots=4, levels=3)
    wheel.add(7.0, "later")  # level 1 (next block)
    wheel.advance(3.0)
    wheel.add(3.5, "sooner")  # also level 1: tick 4 starts the next block
    nxt = wheel.next_deadline()
    assert nxt is not None and 3.0 <= nxt <= 3.5
    assert wheel.advance(3.5) == ["sooner"]
    assert wheel.next_deadline() == 7.0, "after the cascade, the exact deadline"
    assert wheel.advance(7.0) == ["later"]


def test_sweep_releases_cancelled_timers() -> None:
    """Cancelled far timers are dropped by the next advance once they outnumber live ones."""
    wheel: TimingWheel[int] = TimingWheel(tick_s=0.01)
    timers = [wheel.add(3600.0 + i, i) for i in range(3000)]
    keep = timers[0]
    for t in timers:
        t.cancel()
    held = sys.getrefcount(keep)
    wheel.advance(0.01)
    assert sys.getrefcount(keep) == held - 1, "the wheel no longer holds the cancelled timer"
    assert wheel.statistics().cancelled == 3000 and len(wheel) == 0


def test_long_slots_and_a_million_timers_are_freed() -> None:
    """Dropping a wheel with 300k timers in one slot, or 1M timers, frees them without a crash."""
    wheel: TimingWheel[int] = TimingWheel(tick_s=1.0, slots=2, levels=2)
    for i in range(300_000):
        wheel.add(3.0, i)
    assert [len(slot) for slot in wheel._window.values()] == [0, 300_000], "one level-1 slot"
    del wheel
    big: TimingWheel[int] = TimingWheel(tick_s=0.01)
    rng = random.Random(3)
    for i in range(1_000_000):
        big.add(rng.uniform(0, 60), i)
    assert len(big) == 1_000_000
    del big
    assert gc.collect() >= 0


@pytest.mark.parametrize("collector", ["enabled", "disabled"])
def test_dropped_wheel_is_freed(collector: str) -> None:
    """A dropped wheel, its timers and their items are freed (items in cycles not via a timer)."""

    class Item:
        def __init__(self) -> None:
            self.me = self  # a cycle of its own, not through the timer

    was_enabled = gc.isenabled()
    if collector == "disabled":
        gc.disable()
    try:
        wheel: TimingWheel[Item] = TimingWheel(tick_s=0.01, slots=8, levels=3)
        item = Item()
        timers = [wheel.add(d, item) for d in (0.0, 0.05, 5.0, 500.0)]
        timers[1].cancel()
        wheel.advance(0.01)
        refs = [weakref.ref(wheel), weakref.ref(item)]
        del wheel, item, timers
        gc.collect()
        assert [ref() for ref in refs] == [None, None]
    finally:
        if was_enabled:
            gc.enable()


def test_timers_are_untracked_handles_compared_by_identity() -> None:
    """A timer is not tracked by the cycle collector; timers are equal only to themselves."""
    wheel: TimingWheel[str] = TimingWheel()
    a, b = wheel.add(1.0, "x"), wheel.add(1.0, "x")
    assert not gc.is_tracked(a)
    assert a != b and a == a and len({a, b}) == 2


@dataclass
class _Model:
    """The reference: every timer in a list, due by deadline."""

    deadlines: list[float] = field(default_factory=list)
    state: list[str] = field(default_factory=list)  # pending, fired, cancelled


@settings(max_examples=150, deadline=None)
@given(
    config=st.sampled_from([(0.25, 4, 1), (0.25, 4, 2), (0.1, 4, 3), (0.01, 256, 4)]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.floats(-3.0, 300.0)),
            st.tuples(st.just("cancel"), st.integers(0, 200)),
            st.tuples(st.just("advance"), st.floats(0.0, 40.0)),
        ),
        max_size=120,
    ),
)
def test_agrees_with_a_sorted_list(config: tuple[float, int, int], ops: list[Any]) -> None:
    """Against a plain list under a FakeClock: never early, at most a tick late, in order."""
    tick_s, slots, levels = config
    clock = FakeClock(wall_start=1_700_000_000.0)
    wheel: TimingWheel[int] = TimingWheel(
        tick_s=tick_s, slots=slots, levels=levels, start=clock.time()
    )
    model, timers = _Model(), []
    for op, arg in ops:
        now = clock.time()
        if op == "add":
            model.deadlines.append(now + arg)
            model.state.append("pending")
            timers.append(wheel.add(now + arg, len(timers)))
        elif op == "cancel" and timers:
            i = arg % len(timers)
            assert timers[i].cancel() == (model.state[i] == "pending")
            if model.state[i] == "pending":
                model.state[i] = "cancelled"
        elif op == "advance":
            clock.advance(arg)
            now = clock.time()
            fired = wheel.advance(now)
            assert [model.deadlines[i] for i in fired] == sorted(model.deadlines[i] for i in fired)
            for i in fired:
                assert model.state[i] == "pending" and model.deadlines[i] <= now
                model.state[i] = "fired"
        pending = [d for d, s in zip(model.deadlines, model.state, strict=True) if s == "pending"]
        if op == "advance":
            assert all(d > now for d in pending), "everything due has fired"
        assert len(wheel) == len(pending)
        nxt = wheel.next_deadline()
        assert (nxt is None) == (not pending)
        assert nxt is None or nxt <= min(pending)
    stats = wheel.statistics()
    assert (stats.added, stats.fired, stats.cancelled) == (
        len(timers),
        model.state.count("fired"),
        model.state.count("cancelled"),
    )
