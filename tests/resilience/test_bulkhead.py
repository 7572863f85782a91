"""Bulkhead: real concurrency under the limit, queue bounds and timeouts, Vegas limit."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import BulkheadFullError, ValidationError
from keel.resilience import Bulkhead, VegasLimit, VegasSettings
from keel.testing import FakeClock
from tests.resilience._helpers import settle


async def test_200_tasks_never_exceed_the_limit() -> None:
    """200 concurrent tasks through a bulkhead of 10 never run more than 10 at once."""
    bulkhead = Bulkhead(10, max_queue=200)
    gate, full = asyncio.Event(), asyncio.Event()
    active = peak = done = 0

    async def work() -> None:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        if active == 10:
            full.set()
        await gate.wait()
        active -= 1
        done += 1

    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for _ in range(200):
            tg.create_task(bulkhead.run(work))
        await full.wait()
        stats = bulkhead.statistics()
        assert (stats.active, stats.waiting) == (10, 190)
        gate.set()
    assert done == 200
    assert peak == 10
    assert bulkhead.statistics().max_active_seen == 10


async def test_full_queue_rejects_at_once() -> None:
    """With every slot and queue place taken, the next call gets BulkheadFullError."""
    bulkhead = Bulkhead(1, max_queue=1)
    gate, entered = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await gate.wait()

    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        tg.create_task(bulkhead.run(hold))
        await entered.wait()
        tg.create_task(bulkhead.run(hold))
        assert not bulkhead.try_acquire()
        await settle()  # the second call reaches the queue
        assert bulkhead.statistics().waiting == 1
        with pytest.raises(BulkheadFullError):
            await bulkhead.run(hold)
        gate.set()
    assert bulkhead.statistics().rejected == 1


async def test_queue_timeout_on_fake_clock() -> None:
    """A queued call gives up after queue_timeout_s of clock time."""
    clock = FakeClock()
    bulkhead = Bulkhead(1, max_queue=5, queue_timeout_s=1.0, clock=clock)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    async with asyncio.timeout(5):
        await settle()
        assert bulkhead.statistics().waiting == 1
        clock.advance(1.0)
        with pytest.raises(BulkheadFullError, match="no slot within 1 s"):
            await waiter
    assert bulkhead.statistics().waiting == 0
    bulkhead.release()
    assert bulkhead.statistics().active == 0


async def test_cancelled_waiter_leaks_no_slot() -> None:
    """Cancelling a queued call frees its place; the slot goes to nobody else."""
    bulkhead = Bulkhead(1, max_queue=5)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    async with asyncio.timeout(5):
        await settle()
        assert bulkhead.statistics().waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    bulkhead.release()
    stats = bulkhead.statistics()
    assert (stats.active, stats.waiting) == (0, 0)
    assert "active=0/1" in repr(bulkhead)


def test_vegas_grows_with_short_queues_and_shrinks_with_long() -> None:
    """Vegas raises the limit while latency stays at its floor and lowers it as it grows."""
    vegas = VegasLimit(VegasSettings(initial=20, max_limit=200))
    for _ in range(10):
        vegas.update(0.010, inflight=vegas.limit, dropped=False)
    grown = vegas.limit
    assert grown > 20
    for _ in range(10):
        vegas.update(0.050, inflight=vegas.limit, dropped=False)
    assert vegas.limit < grown
    before = vegas.limit
    vegas.update(0.010, inflight=vegas.limit, dropped=True)
    assert vegas.limit < before
    assert vegas.update(0.010, inflight=0, dropped=False) == vegas.limit  # app-limited


async def test_adaptive_bulkhead_follows_its_limit() -> None:
    """A bulkhead driven by Vegas reports the adaptive limit and feeds it samples."""
    vegas = VegasLimit(VegasSettings(initial=2, min_limit=1, max_limit=50))
    bulkhead = Bulkhead(adaptive=vegas, clock=FakeClock())

    async def fast() -> int:
        return 1

    assert bulkhead.limit == 2
    assert await bulkhead.run(fast) == 1
    assert bulkhead.statistics().active == 0


def test_bulkhead_arguments_are_validated() -> None:
    """Bad bounds are a ValidationError."""
    with pytest.raises(ValidationError):
        Bulkhead(0)
    with pytest.raises(ValidationError):
        Bulkhead(1, queue_timeout_s=0)
    with pytest.raises(ValidationError):
        VegasSettings(initial=0)
