"""Hedging: a second attempt after a delay, first success wins, the loser is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import StoreUnavailableError
from keel.resilience import Hedge, HedgeSettings, RetryBudget, RetryBudgetSettings
from keel.testing import FakeClock
from tests.resilience._helpers import settle


async def test_hedge_wins_and_the_loser_is_cancelled() -> None:
    """A stuck first attempt is hedged after the delay; the stuck one is cancelled."""
    clock = FakeClock(autojump=True)
    loser_cancelled = asyncio.Event()
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                loser_cancelled.set()
                raise
        return f"attempt {attempts}"

    hedge = Hedge(HedgeSettings(delay_s=0.2), clock=clock)
    async with asyncio.timeout(5):
        assert await hedge.run(call) == "attempt 2"
    assert loser_cancelled.is_set()
    assert clock.monotonic() == pytest.approx(0.2)
    stats = hedge.statistics()
    assert (stats.hedges, stats.hedge_wins) == (1, 1)


async def test_fast_first_attempt_sends_no_hedge() -> None:
    """An answer before the delay means no second attempt."""
    clock = FakeClock(autojump=True)
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        await clock.sleep(0.05)
        return attempts

    hedge = Hedge(HedgeSettings(delay_s=0.2), clock=clock)
    async with asyncio.timeout(5):
        assert await hedge.run(call) == 1
    assert attempts == 1


async def test_failed_first_attempt_is_hedged_at_once() -> None:
    """A first attempt that fails before the delay starts the hedge immediately."""
    clock = FakeClock(autojump=True)
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise StoreUnavailableError("first instance down")
        return "second instance"

    hedge = Hedge(HedgeSettings(delay_s=10.0), clock=clock)
    async with asyncio.timeout(5):
        assert await hedge.run(call) == "second instance"
    assert hedge.statistics().hedges == 1


async def test_budget_bounds_hedges() -> None:
    """With the retry budget spent, no hedge is sent and the first attempt is awaited."""
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetSettings(ratio=0.0, min_retries_per_s=0), clock=clock)
    started = asyncio.Event()
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        started.set()
        await clock.sleep(1.0)
        return attempts

    hedge = Hedge(HedgeSettings(delay_s=0.1), budget=budget, clock=clock)
    task = asyncio.create_task(hedge.run(call))
    async with asyncio.timeout(5):
        await started.wait()
        await settle()
        clock.advance(0.1)  # the hedge delay passes: the budget refuses
        await settle()
        await settle()
        clock.advance(0.9)
        assert await task == 1
    assert attempts == 1
    assert hedge.statistics().budget_rejections == 1


async def test_all_attempts_failing_raise_the_last_error() -> None:
    """When every attempt fails, the caller sees an attempt's error."""
    clock = FakeClock(autojump=True)

    async def down() -> None:
        raise StoreUnavailableError("down")

    async with asyncio.timeout(5):
        with pytest.raises(StoreUnavailableError):
            await Hedge(HedgeSettings(delay_s=0.1, max_hedges=2), clock=clock).run(down)


async def test_adaptive_delay_follows_the_percentile() -> None:
    """Without a fixed delay, the hedge waits the p95 of recent latencies."""
    clock = FakeClock(autojump=True)
    hedge = Hedge(HedgeSettings(percentile=95, min_delay_s=0.001), clock=clock)

    async def takes(seconds: float) -> None:
        await clock.sleep(seconds)

    async with asyncio.timeout(5):
        for i in range(100):
            await hedge.run(takes, 0.01 if i < 94 else 0.5)
    assert hedge.delay() == pytest.approx(0.5)
