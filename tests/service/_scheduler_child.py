"""``python -m tests.service._scheduler_child URL``: ``await scheduler.run()`` as the docs show it.

Prints ``TICK`` on each run of a one-second job and ``STOPPED`` once run() returned.
"""

from __future__ import annotations

import asyncio
import sys

import keel
from keel.schedule import JobContext, Scheduler


async def main(url: str) -> None:
    async with keel.connect(url) as store:
        scheduler = Scheduler(store, group="docs")

        @scheduler.job("docs.tick", interval_s=1)
        async def tick(ctx: JobContext) -> None:
            print("TICK", ctx.fencing_token, flush=True)

        await scheduler.run()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
