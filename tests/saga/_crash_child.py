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
    """Run a coordinator until killed."""
    async with keel.connect(url) as store:
        coordinator = Coordinator(store, [make_saga(Path(db))], ttl_s=2, concurrency=32)
        async with coordinator:
            print("READY", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
