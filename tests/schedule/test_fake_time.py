"""The scheduler follows an injected clock: fake hours pass in a second or two of real time."""

from __future__ import annotations

import asyncio
import time

from keel.backends.memory import MemoryStore
from keel.schedule import JobContext, Scheduler, Status, list_runs
from keel.testing import FakeClock
from tests._util import eventually
from tests.schedule._helpers import running, wait_runs

TEN = 1_700_000_400.0  # a multiple of ten minutes
START = TEN + 1


async def _move_to(clock: FakeClock, when: float) -> None:
    """Advance the fake clock to ``when`` in steps of at most 30 s, letting tasks react."""
    while clock.time() < when:
        clock.advance(min(30.0, when - clock.time()))
        for _ in range(5):
            await asyncio.sleep(0.002)


async def test_cron_job_runs_on_fake_time() -> None:
    """A ten-minute cron fires once per ten fake minutes; no wait follows the real clock."""
    clock = FakeClock(wall_start=START)
    fires: list[float] = []
    store = await MemoryStore(clock=clock).start()
    try:
        s = Scheduler(store, ttl_s=120, lookahead_s=0.5, clock=clock)

        @s.job("tenmin", cron="*/10 * * * *")
        async def tenmin(ctx: JobContext) -> None:
            fires.append(ctx.fire_time.timestamp())

        began = time.monotonic()
        async with running(s):
            assert s.planner is not None
            await asyncio.wait_for(s.planner.leading.wait(), 5)
            for n in (1, 2, 3):
                fire = TEN + 600 * n
                await _move_to(clock, fire - 0.4)  # the planner writes the run 0.5 s ahead
                await wait_runs(store, "tenmin", lambda runs, n=n: len(runs) == n)
                await _move_to(clock, fire + 0.01)
                await eventually(lambda n=n: len(fires) == n, 5, every_s=0.005)
        runs = await list_runs(store, "tenmin")
    finally:
        await store.close()
    assert fires == [TEN + 600, TEN + 1200, TEN + 1800]
    assert [r.status for r in runs] == [Status.SUCCEEDED] * 3
    assert all(r.started_at is not None and 0 <= r.started_at - r.fire < 1 for r in runs)
    assert time.monotonic() - began < 15  # 30 fake minutes took seconds, not minutes
