"""The timing wheel: add/cancel/advance, any horizon, never early, driven by FakeClock."""

from __future__ import annotations

import asyncio
import random

import pytest

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
