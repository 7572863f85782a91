"""A relay that stops at a crash point: ``python -m tests.events._relay_child STORE BUS POINT``.

POINT is ``marked`` (after the mark, before the publish) or ``published``
(after the publish, before the delete). At that point the child prints the
point's name and waits to be killed with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import keel
import keel.events
from keel.events import Relay


class _Stopping(Relay):
    def __init__(self, *args: object, point: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._point = point

    def _stop_here(self, point: str) -> None:
        if point == self._point:
            print(point.upper(), flush=True)
            time.sleep(3600)  # blocks the whole process: nothing else of the relay runs

    def _before_publish(self) -> None:
        self._stop_here("marked")

    def _after_publish(self) -> None:
        self._stop_here("published")


async def main(store_url: str, bus_url: str, point: str) -> None:
    """Relay until the crash point (the parent then kills the process)."""
    async with keel.connect(store_url) as store:
        bus = await keel.events.connect(bus_url)
        relay = _Stopping(store, bus, point=point, ttl_s=2, batch=100)
        print("READY", flush=True)
        await relay.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(*sys.argv[1:4]))
