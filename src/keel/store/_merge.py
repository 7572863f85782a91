"""Several watches read as one stream (a registry service's instances and health marks,
a config's main and gray records)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from keel.errors import KeelError
from keel.store._base import Watch
from keel.store._types import Event

__all__ = ["merged"]


async def _pump(watch: Watch, queue: asyncio.Queue[Event | BaseException]) -> None:
    try:
        async for event in watch:
            queue.put_nowait(event)
    except KeelError as exc:
        queue.put_nowait(exc)


async def merged(watches: Sequence[Watch]) -> AsyncIterator[tuple[Event, bool]]:
    """Yield ``(event, more)`` from started watches, ``more`` telling whether others are queued.

    Events of different watches interleave in arrival order (each watch's own
    order is kept). The first error of any watch is raised. Callers use
    ``more`` to act once per burst rather than once per event.
    """
    queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
    async with asyncio.TaskGroup() as pumps:
        tasks = [pumps.create_task(_pump(watch, queue)) for watch in watches]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item, not queue.empty()
        finally:
            for task in tasks:
                task.cancel()
