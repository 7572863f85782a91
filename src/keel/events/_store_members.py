"""Membership, partition claims and append wake-ups for the store engine.

Each member gets its own store lease (granted on its first heartbeat or
claim, with the TTL asked for, rounded up to whole seconds). Its member key
and its partition claims hang on that lease, so a member whose process dies
disappears from the group, and its partitions come free, when the lease runs
out. Renewals are cheap: a claim renews the lease only when a third of its TTL
has passed since the last renewal.

:class:`Wakeups` runs one store watch over the sequence counters per engine,
so a blocking ``read_group`` waits for an append instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass

from keel.clock import Clock
from keel.errors import LeaseNotFoundError
from keel.events._store_records import claim_key, member_key
from keel.store import Compare, Delete, Put, Store

__all__ = ["Members", "Wakeups"]

log = logging.getLogger("keel.events")

_WATCH_RETRY_S = 0.5


@dataclass(slots=True)
class _Held:
    lease: int
    ttl: int
    renewed: float


class Members:
    """Member keys and partition claims, each on its member's lease."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = asyncio.Lock()

    async def _lease(self, member: str, ttl_s: float, *, renew: bool) -> int:
        ttl = max(1, math.ceil(ttl_s))
        async with self._lock:
            held = self._held.get(member)
            now = self._clock.monotonic()
            if held is not None and (renew or now - held.renewed >= held.ttl / 3):
                try:
                    await self._store.keepalive(held.lease)
                    held.renewed = now
                except LeaseNotFoundError:
                    held = None
            if held is None:
                lease = await self._store.grant(ttl)
                held = self._held[member] = _Held(lease.id, ttl, now)
            return held.lease

    async def heartbeat(self, topic: str, group: str, member: str, ttl_s: float) -> list[str]:
        """Put the member key on the member's (renewed) lease; list live members."""
        key = member_key(topic, group, member)
        if ttl_s <= 0:
            await self._store.delete(key)
        else:
            lease = await self._lease(member, ttl_s, renew=True)
            await self._store.put(key, member.encode(), lease=lease)
        prefix = member_key(topic, group, "")
        kvs, _ = await self._store.range(prefix)
        return sorted(kv.key[len(prefix) :] for kv in kvs)

    async def claim(
        self, topic: str, group: str, partition: int, member: str, ttl_s: float
    ) -> bool:
        """Take a free partition or renew the member's own claim."""
        lease = await self._lease(member, ttl_s, renew=False)
        key = claim_key(topic, group, partition)
        mine = Put(key, member.encode(), lease=lease)
        taken = await self._store.txn([Compare.absent(key)], [mine])
        if taken.succeeded:
            return True
        owned = await self._store.txn([Compare.value(key, "==", member.encode())], [mine])
        return owned.succeeded

    async def release(self, topic: str, group: str, partition: int, member: str) -> None:
        """Delete the claim if the member holds it."""
        key = claim_key(topic, group, partition)
        await self._store.txn([Compare.value(key, "==", member.encode())], [Delete(key)])

    async def aclose(self) -> None:
        """Revoke every member lease this engine granted (their keys go with them)."""
        held, self._held = self._held, {}
        for h in held.values():
            with contextlib.suppress(Exception):  # already expired, or the store is gone
                await self._store.revoke(h.lease)


class Wakeups:
    """Wakes blocked readers when a partition's sequence counter changes."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def register(self, key: str) -> asyncio.Event:
        """Return an event set on the next change of ``key`` (call :meth:`forget` after)."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="keel-events-wakeups")
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        return event

    def forget(self, key: str, event: asyncio.Event) -> None:
        """Stop waking ``event``."""
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]

    async def _watch(self) -> None:
        while True:
            try:
                async with self._store.watch("events-seq/", prefix=True) as changes:
                    async for change in changes:
                        for event in self._waiters.get(change.kv.key, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # readers fall back to their timeouts meanwhile
                log.debug("events wake-up watch failed (%s); retrying", exc)
                for waiters in self._waiters.values():
                    for event in waiters:
                        event.set()
                await self._clock.sleep(_WATCH_RETRY_S)

    async def aclose(self) -> None:
        """Stop the watch."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
