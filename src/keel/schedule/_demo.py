"""The demo job ``keel up`` runs: a heartbeat every 5 s that logs into its run record."""

from __future__ import annotations

from keel.schedule._context import JobContext
from keel.schedule._scheduler import Scheduler

__all__ = ["DEMO_JOB", "register_demo"]

DEMO_JOB = "demo.heartbeat"


def register_demo(scheduler: Scheduler, *, interval_s: float = 5.0) -> None:
    """Declare the demo job on ``scheduler`` (also usable as ``keel worker keel.schedule.demo``)."""

    @scheduler.job(DEMO_JOB, interval_s=interval_s, keep_last=20)
    async def heartbeat(ctx: JobContext) -> None:
        ctx.log.info(
            "heartbeat at %s on %s (attempt %d, token %d)",
            ctx.fire_time.isoformat(),
            ctx.worker_id,
            ctx.attempt,
            ctx.fencing_token,
        )


register = register_demo
"""``keel worker keel.schedule._demo`` looks for ``register(scheduler)``."""
