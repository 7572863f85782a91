"""Running schedulers inside a test, bounded and cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from keel.schedule import Execution, Scheduler, Status, list_runs
from keel.store import Store


@contextlib.asynccontextmanager
async def running(*schedulers: Scheduler) -> AsyncIterator[None]:
    """Run the schedulers' ``run()`` for the block; wait until each is ready."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(s.run(handle_sigterm=False)) for s in schedulers]
        try:
            async with asyncio.timeout(20):
                for s in schedulers:
                    await s.ready.wait()
            yield
        finally:
            for task in tasks:
                task.cancel()


async def wait_runs(
    store: Store,
    job: str,
    done: Callable[[list[Execution]], bool],
    timeout_s: float = 20.0,
) -> list[Execution]:
    """Poll the job's records until ``done(records)``; return them."""
    async with asyncio.timeout(timeout_s):
        while True:
            runs = await list_runs(store, job)
            if done(runs):
                return runs
            await asyncio.sleep(0.1)


def finished(runs: list[Execution], count: int) -> bool:
    """At least ``count`` runs are over."""
    return sum(r.status.final for r in runs) >= count


def by_status(runs: list[Execution], status: Status) -> list[Execution]:
    """The runs with ``status``."""
    return [r for r in runs if r.status is status]
