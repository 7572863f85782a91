"""FakeClock: time moves only when told, and sleepers wake in order."""

from __future__ import annotations

import asyncio

import pytest

from keel.clock import SYSTEM_CLOCK, Clock
from keel.testing import FakeClock


async def test_sleepers_wake_when_time_is_advanced() -> None:
    """A sleep ends only once the clock has been advanced past it."""
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(sleeper("late", 5))
        tasks.create_task(sleeper("early", 1))
        await asyncio.sleep(0)
        assert clock.sleepers == 2
        clock.advance(1)
        await asyncio.sleep(0)
        assert woke == ["early"]
        clock.advance(4)
    assert woke == ["early", "late"]
    assert clock.monotonic() == 5


async def test_autojump_skips_idle_time() -> None:
    """With autojump a long sleep finishes at once and the clock shows the time passed."""
    clock = FakeClock(autojump=True)
    async with asyncio.timeout(1):
        await clock.sleep(3600)
    assert clock.monotonic() == 3600
    assert clock.now().timestamp() == pytest.approx(clock.time())


def test_clocks_satisfy_the_protocol() -> None:
    """Both clocks are Clocks; time cannot go backwards."""
    assert isinstance(SYSTEM_CLOCK, Clock)
    assert isinstance(FakeClock(), Clock)
    with pytest.raises(ValueError, match="backwards"):
        FakeClock().advance(-1)


async def test_autojump_never_skips_a_sleep_started_by_a_woken_task() -> None:
    """A task woken by a jump runs before time jumps again, so its next sleep is honoured."""
    clock = FakeClock(autojump=True)
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1)
            ticks.append(clock.monotonic())

    async def long_sleeper() -> None:
        await clock.sleep(10)

    async with asyncio.timeout(2), asyncio.TaskGroup() as tasks:
        tasks.create_task(ticker())
        tasks.create_task(long_sleeper())
    assert ticks == [1, 2, 3]
    assert clock.monotonic() == 10
