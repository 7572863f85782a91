"""Deadlines in a context variable, and the Timeout policy."""

from __future__ import annotations

import asyncio
import gc
import math
import weakref

import pytest

from keel.errors import DeadlineExceededError, ValidationError
from keel.resilience import Timeout, current_deadline, deadline, remaining
from keel.testing import FakeClock


async def test_no_deadline_means_infinite_remaining() -> None:
    """Outside any deadline, remaining() is infinite and there is no current deadline."""
    assert remaining() == math.inf
    assert current_deadline() is None


async def test_nested_deadline_cannot_extend_outer() -> None:
    """An inner deadline longer than the outer one keeps the outer budget."""
    clock = FakeClock()
    async with deadline(2.0, clock=clock):
        clock.advance(0.5)
        assert remaining() == pytest.approx(1.5)
        async with deadline(10.0, clock=clock):
            assert remaining() == pytest.approx(1.5)
        async with deadline(1.0, clock=clock):
            assert remaining() == pytest.approx(1.0)
    assert remaining() == math.inf


async def test_timeout_raises_deadline_exceeded_on_fake_clock() -> None:
    """A call that outlives its Timeout is cancelled at the deadline: DeadlineExceededError."""
    clock = FakeClock()
    sleeping, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        sleeping.set()
        try:
            await clock.sleep(10.0)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(Timeout(1.0, clock=clock).run(slow))
    async with asyncio.timeout(5):
        await sleeping.wait()
        clock.advance(0.999)
        assert not cancelled.is_set()
        clock.advance(0.001)
        with pytest.raises(DeadlineExceededError):
            await task
    assert cancelled.is_set()


async def test_timeout_on_system_clock() -> None:
    """With the real clock a hanging call is cut at its deadline, and is a TimeoutError too."""
    never = asyncio.Event()
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError):
            await Timeout(0.05).run(never.wait)


async def test_fast_call_returns_and_clears_deadline() -> None:
    """A call within its budget returns its value and leaves no deadline behind."""

    async def answer(x: int) -> int:
        assert remaining() <= 1.0
        return x * 2

    assert await Timeout(1.0).run(answer, 21) == 42
    assert current_deadline() is None


async def test_many_scopes_each_fire_at_their_own_deadline() -> None:
    """One watchdog serves scopes with different deadlines; each fires at its own time."""
    clock = FakeClock()
    budgets = (3.0, 1.0, 2.0)
    started = {s: asyncio.Event() for s in budgets}
    expired = {s: asyncio.Event() for s in budgets}

    async def sleep_long(seconds: float) -> None:
        started[seconds].set()
        await clock.sleep(100.0)

    async def wait_out(seconds: float) -> None:
        with pytest.raises(DeadlineExceededError):
            await Timeout(seconds, clock=clock).run(sleep_long, seconds)
        expired[seconds].set()

    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        for seconds in budgets:
            tg.create_task(wait_out(seconds))
        for seconds in budgets:
            await started[seconds].wait()
        for seconds in (1.0, 2.0, 3.0):
            clock.advance(1.0)
            await expired[seconds].wait()
            assert [s for s in budgets if expired[s].is_set()] == [
                s for s in budgets if s <= seconds
            ]


async def test_outer_cancellation_is_not_a_deadline() -> None:
    """A cancellation from outside stays a CancelledError, not DeadlineExceededError."""
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(Timeout(30.0).run(hang))
    async with asyncio.timeout(5):
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_expired_outer_deadline_fails_fast() -> None:
    """A call started after the enclosing deadline passed fails without running."""
    clock = FakeClock()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    async with deadline(1.0, clock=clock):
        clock.advance(1.5)
        with pytest.raises(DeadlineExceededError):
            await Timeout(5.0, clock=clock).run(work)
    assert not ran


def test_bad_budgets_are_rejected() -> None:
    """Non-positive or infinite budgets are a ValidationError."""
    with pytest.raises(ValidationError):
        Timeout(0)
    with pytest.raises(ValidationError):
        Timeout(math.inf)
    with pytest.raises(ValidationError):
        deadline(-1.0)


def test_watchdogs_do_not_keep_finished_loops_alive() -> None:
    """The per-loop watchdog registry is weak: a finished event loop can be collected."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await Timeout(30.0).run(asyncio.sleep, 0)

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None
