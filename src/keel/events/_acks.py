"""Deferred, batched acks of one subscription: ``event.ack()`` enqueues, a flush sends.

An ack used to be one engine round trip per event (an ``XACK`` or a store
transaction), which cost more than the rest of the event's way through the
bus. Acks are now kept per partition and sent in one engine call per
partition when the first of them is :data:`ACK_DELAY_S` old, before the
partition's next read, before the partition is released to another member,
and when the subscription closes.

Durability: an ack is in the engine within about :data:`ACK_DELAY_S` (or at
the next read or close). A consumer that crashes in that window leaves the
event pending, and the next owner delivers it again: delivery stays at least
once, and such duplicates are the ones a crash causes anyway.
"""

from __future__ import annotations

import asyncio
import logging

from keel.clock import Clock
from keel.events._engine import Engine

__all__ = ["ACK_DELAY_S", "Acks"]

log = logging.getLogger("keel.events")

ACK_DELAY_S = 0.001
"""How long the first unsent ack of a partition waits for others to join its batch."""

_TRIES = 5


class Acks:
    """The acks of one subscription not yet sent to the engine, per partition."""

    def __init__(self, engine: Engine, topic: str, group: str, clock: Clock) -> None:
        self._engine = engine
        self._topic = topic
        self._group = group
        self._clock = clock
        self._unsent: dict[int, list[str]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._due = asyncio.Event()

    def add(self, partition: int, entry_id: str) -> None:
        """Queue the ack of one entry (no I/O: a flush sends it)."""
        ids = self._unsent.get(partition)
        if ids is None:
            self._unsent[partition] = [entry_id]
        else:
            ids.append(entry_id)
        self._due.set()

    def unsent(self) -> int:
        """How many acks wait to be sent."""
        return sum(len(ids) for ids in self._unsent.values())

    async def flush(self, partition: int) -> None:
        """Send the partition's queued acks, after any flush of it already under way.

        When it returns, every ack of ``partition`` queued before the call has
        been sent (or given up on after retries: those entries stay pending
        and are delivered again).
        """
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        elif not self._unsent.get(partition) and not lock.locked():
            return
        async with lock:
            ids = self._unsent.pop(partition, None)
            if ids:
                await self._send(partition, ids)

    async def flush_all(self) -> None:
        """Send every queued ack."""
        for partition in list(self._unsent):
            await self.flush(partition)

    async def run(self) -> None:
        """Send queued acks :data:`ACK_DELAY_S` after the first of a batch (runs forever)."""
        while True:
            await self._due.wait()
            await self._clock.sleep(ACK_DELAY_S)
            self._due.clear()  # acks queued from here on start the next round
            try:
                await self.flush_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: the next round sends what is left
                log.warning("events %s/%s: ack flush failed: %s", self._topic, self._group, exc)

    async def _send(self, partition: int, ids: list[str]) -> None:
        for attempt in range(_TRIES):
            try:
                await self._engine.ack(self._topic, partition, self._group, ids)
                return
            except Exception as exc:  # the entries stay pending: they are delivered again
                if attempt == _TRIES - 1:
                    log.warning(
                        "events %s/%s: ack of %d events failed: %s",
                        self._topic,
                        self._group,
                        len(ids),
                        exc,
                    )
                    return
                await self._clock.sleep(0.05 * 2**attempt)
