"""A kill-test consumer: ``python -m tests.events._consumer_child URL GROUP NAME LOG``.

Handles every event of ``load`` by appending ``<key> <seq> <ns>`` to LOG
(an unbuffered append: a line written survives ``kill -9``), then returning,
which acks it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import keel.events
from keel.events import Event


async def main(url: str, group: str, name: str, log_path: str) -> None:
    """Consume until killed."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bus = await keel.events.connect(url)

    @bus.handler(
        "load",
        group=group,
        name=name,
        concurrency=16,
        max_attempts=1000,
        member_ttl_s=2.0,
        block_s=0.5,
        start="earliest",
    )
    async def handle(event: Event) -> None:
        os.write(fd, f"{event.key} {event.payload['s']} {time.time_ns()}\n".encode())

    print("READY", flush=True)
    await bus.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(*sys.argv[1:5]))
