"""A worker module for the console's jobs flow: ``keel worker tests.console._pages_worker``.

Declares the manual job ``greet``, whose handler logs a greeting (the run's
captured log the jobs page shows) and sleeps a second, so the run is seen RUNNING, then
SUCCEEDED, on an open page.
"""

from __future__ import annotations

import asyncio

from keel.schedule import JobContext, Scheduler


def register(scheduler: Scheduler) -> None:
    """Declare the ``greet`` job (fired only by hand)."""

    @scheduler.job("greet")
    async def greet(ctx: JobContext) -> None:
        who = (ctx.args or {}).get("who", "world") if isinstance(ctx.args, dict) else "world"
        ctx.log.info("hello, %s (token %d)", who, ctx.fencing_token)
        await asyncio.sleep(1.0)
