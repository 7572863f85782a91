"""Group commit of appends for the store engine: concurrent appends share transactions.

Each append to a partition is a compare-and-swap on the partition's sequence
key, so concurrent publishers to one partition in one process used to
conflict and retry each other (and each paid its own transaction). Here the
appends to one partition queue up behind one writer task, which writes as
many whole calls as fit in one transaction (100 records, 1 MiB) at a time.
Each call stays atomic: its records go in one transaction (a call larger
than the limits is split as before, in order, alone).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["GroupCommit"]

Write = Callable[[str, int, list[bytes]], Awaitable[list[str]]]
"""``(topic, partition, records) -> ids``: one transaction (within the limits)."""

_Call = tuple[Sequence[bytes], "asyncio.Future[list[str]]"]


class GroupCommit:
    """Queue appends per partition; one writer per partition batches whole calls."""

    def __init__(self, write: Write, *, max_records: int, max_bytes: int) -> None:
        self._write = write
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._queues: dict[tuple[str, int], deque[_Call]] = {}
        self._writers: set[asyncio.Task[None]] = set()

    async def append(self, topic: str, partition: int, records: Sequence[bytes]) -> list[str]:
        """Append ``records`` (atomically, unless over the limits) and return their ids."""
        slot = (topic, partition)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = deque()
            task = asyncio.create_task(self._drain(slot, queue), name="keel-events-append")
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        queue.append((records, future))
        return await future

    def _take(self, queue: deque[_Call]) -> list[_Call]:
        """The next calls that fit in one transaction (at least one)."""
        taken: list[_Call] = []
        count = size = 0
        while queue:
            records, future = queue[0]
            if future.cancelled():
                queue.popleft()
                continue
            more = sum(len(r) for r in records)
            if taken and (
                count + len(records) > self._max_records or size + more > self._max_bytes
            ):
                break
            taken.append(queue.popleft())
            count, size = count + len(records), size + more
        return taken

    async def _drain(self, slot: tuple[str, int], queue: deque[_Call]) -> None:
        topic, partition = slot
        try:
            while queue:
                calls = self._take(queue)
                if not calls:
                    break
                try:
                    if len(calls) == 1:
                        ids = await self._split(topic, partition, list(calls[0][0]))
                    else:
                        ids = await self._write(topic, partition, [r for c, _ in calls for r in c])
                except Exception as exc:  # each caller gets its own transaction's failure
                    for _, future in calls:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for records, future in calls:
                    if not future.done():
                        future.set_result(ids[start : start + len(records)])
                    start += len(records)
        finally:
            del self._queues[slot]
            for _, future in queue:  # only when cancelled (the engine is going away)
                if not future.done():
                    future.cancel()

    async def _split(self, topic: str, partition: int, records: list[bytes]) -> list[str]:
        """One call: one transaction, or several in order when over the limits."""
        ids: list[str] = []
        batch: list[bytes] = []
        size = 0
        for record in records:
            if batch and (len(batch) >= self._max_records or size + len(record) > self._max_bytes):
                ids += await self._write(topic, partition, batch)
                batch, size = [], 0
            batch.append(record)
            size += len(record)
        if batch:
            ids += await self._write(topic, partition, batch)
        return ids
