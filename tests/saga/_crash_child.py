"""A coordinator process for the crash test: ``python -m tests.saga._crash_child URL DB``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import keel
from keel.saga import Coordinator
from tests.saga._crash_participants import make_saga


async def main(url: str, db: str) -> None:
    """Run a coordinator until killed (or SIGTERM: it then exits 0)."""
    async with keel.connect(url) as store:
        coordinator = Coordinator(store, [make_saga(Path(db))], ttl_s=2, concurrency=32)
        running = asyncio.create_task(coordinator.run())
        await coordinator.ready.wait()
        print("READY", flush=True)
        await running
    print("STOPPED", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
