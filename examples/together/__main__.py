"""``python -m examples.together [--store URL] [--port P]``: a service and jobs in one process.

The pattern for a program that serves requests *and* runs scheduled jobs:
both run in one task group; SIGTERM or SIGINT stops both (keel has one signal
owner per process, so neither steals the other's signal); the job takes a
lock on the service's own session, so the instance and its locks share one
lease. Prints one line
per event (``READY``, ``TICK``, ``STOPPED``) for the curious and
for the test that runs this file as written.
"""

from __future__ import annotations

import argparse
import asyncio

import keel
from keel.coord import Lock
from keel.schedule import JobContext, Scheduler
from keel.service import Service


async def hello(scope: dict[str, object], receive: object, send: object) -> None:
    """A minimal ASGI app: every request gets ``hello``."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"hello\n"})  # type: ignore[operator]


async def main(url: str, port: int) -> None:
    """Serve, tick every second and hold a lock until SIGTERM/SIGINT; then stop cleanly."""
    async with keel.connect(url) as store:
        service = Service("together", hello, store=store, port=port)
        scheduler = Scheduler(store, group="together")

        @scheduler.job("together.tick", interval_s=1)
        async def tick(ctx: JobContext) -> None:
            await service.ready.wait()
            assert service.session is not None
            # the lock lives on the service's session: it goes when the instance goes
            async with Lock(service.session, "together/report") as held:
                print("TICK", ctx.fencing_token, held.fencing_token, flush=True)

        async def announce() -> None:
            await service.ready.wait()
            print("READY", service.port, flush=True)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(service.serve())
            tasks.create_task(scheduler.run())
            tasks.create_task(announce())
    print("STOPPED", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="sqlite://", help="store URL")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.store, args.port))
