"""A scheduler process for the schedule fault tests; reports on stdout.

    python -m tests.faults.schedule_child URL SPEC_JSON

SPEC_JSON: {"ttl": 2, "jobs": [{"name":..., "interval_s":..., "shards":..., "misfire":...}],
"handlers": ["slow"], "slow_s": 3, "lookahead_s": 1, "grace_s": 1, "planner": true}.

Lines: ``READY <worker-id>``, ``LEADER``, ``RAN <execution-id> <token> <attempt>``,
``DONE <execution-id> <effect: ok|rejected>``. Every handler writes a fenced
effect ``effects/<execution-id>`` guarded by its claim, so a stale run's
effect is refused.
"""

from __future__ import annotations

import asyncio
import json
import sys

import keel
from keel.schedule import JobContext, Scheduler
from keel.store import Compare, Put


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def effect(ctx: JobContext, delay_s: float) -> None:
    say("RAN", ctx.execution_id, ctx.fencing_token, ctx.attempt)
    try:
        if delay_s:
            await asyncio.sleep(delay_s)
    finally:
        # Even when cancelled (a worker whose session is lost stops its handlers),
        # the side effect is attempted and carried to its end: the fence must refuse it.
        key = f"effects/{ctx.execution_id}"
        write = asyncio.ensure_future(
            ctx.store.txn(
                [ctx.guard(), Compare.absent(key)], [Put(key, str(ctx.fencing_token).encode())]
            )
        )
        try:
            result = await asyncio.shield(write)
        except asyncio.CancelledError:  # cancelled mid-write: finish it, report it, then stop
            result = await write
            say("DONE", ctx.execution_id, "ok" if result.succeeded else "rejected")
            raise
        say("DONE", ctx.execution_id, "ok" if result.succeeded else "rejected")


async def main(url: str, spec: dict[str, object]) -> None:
    async with keel.connect(url) as store:
        scheduler = Scheduler(
            store,
            ttl_s=int(spec.get("ttl", 2)),  # type: ignore[call-overload]
            planner=bool(spec.get("planner", True)),
            lookahead_s=float(spec.get("lookahead_s", 1.0)),  # type: ignore[arg-type]
            grace_s=float(spec.get("grace_s", 1.0)),  # type: ignore[arg-type]
            steal_after_s=float(spec.get("steal_after_s", 0.5)),  # type: ignore[arg-type]
        )
        slow_s = float(spec.get("slow_s", 0.0))  # type: ignore[arg-type]

        async def quick(ctx: JobContext) -> None:
            await effect(ctx, 0.0)

        async def slow(ctx: JobContext) -> None:
            await effect(ctx, slow_s)

        for job in spec.get("jobs", []):  # type: ignore[attr-defined]
            options = {k: v for k, v in job.items() if k not in ("name", "slow")}
            scheduler.job(job["name"], **options)(slow if job.get("slow") else quick)
        for name in spec.get("handlers", []):  # type: ignore[attr-defined]
            scheduler.handler(name)(slow)
        task = asyncio.ensure_future(scheduler.run())
        await scheduler.ready.wait()
        assert scheduler.worker is not None
        say("READY", scheduler.worker.id)
        while not task.done():
            planner = scheduler.planner
            if planner is not None and planner.leading.is_set():
                say("LEADER")
                break
            await asyncio.sleep(0.05)
        try:
            await task
        except asyncio.CancelledError:
            say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
