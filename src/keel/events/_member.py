"""One consumer's membership in its group: heartbeat, partition ownership, readers.

Every ``ttl/3`` the member heartbeats, computes which partitions it should own
by rendezvous hashing over the live members (Thaler & Ravishankar, "Using
name-based mappings to increase hit rates", 1998: each partition goes to the
member with the highest hash of (member, partition), so a member joining or
leaving moves only its own share), and claims or renews them. It reads a
partition only while its claim is fresh: a reader stops at
``sent + ttl - margin``, where ``sent`` is when the last successful renewal
was sent, so it stops before any other member can take the partition over.

A partition it gives up (rebalance) is drained first: queued events are
dropped (they stay pending), handed-out ones are waited for, their acks are
sent, then the claim is released. A reader sends its partition's queued acks
before each read and reads only when the subscription has room for a fair
batch (see ``_dispatch.py``). A new owner first takes over every pending entry of the partition
(``claim_pending``) and only then reads new ones: per-key order survives a
crash or a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

from keel.clock import Clock
from keel.events._dispatch import Dispatcher
from keel.events._engine import Engine
from keel.events._metrics import EventsMetrics
from keel.events._settings import Retention, SubscribeSettings

__all__ = ["Member", "owned_partitions"]

log = logging.getLogger("keel.events")

_TAKEOVER_COUNT = 10_000
_ERROR_PAUSE_S = 0.5
_ROOM_WAIT_S = 0.2
_STOP_GRACE_S = 5.0
_STRAYS_EVERY = 6  # ticks (two TTLs)


def _score(member: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member}\0{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owned_partitions(partitions: int, members: list[str], me: str) -> set[int]:
    """The partitions rendezvous hashing gives to ``me`` among ``members`` (pure)."""
    alive = set(members) | {me}
    return {p for p in range(partitions) if max(alive, key=lambda m: (_score(m, p), m)) == me}


class Member:
    """The heartbeat-and-claim loop of one subscription, and its partition readers."""

    def __init__(
        self,
        engine: Engine,
        topic: str,
        group: str,
        name: str,
        partitions: int,
        settings: SubscribeSettings,
        dispatcher: Dispatcher,
        *,
        retention: Retention,
        metrics: EventsMetrics,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._topic = topic
        self._group = group
        self.name = name
        self._partitions = partitions
        self._settings = settings
        self._dispatcher = dispatcher
        self._retention = retention
        self._metrics = metrics
        self._clock = clock
        self._ttl = settings.member_ttl_s
        self._margin = max(0.2, self._ttl / 10)
        self._renewed: dict[int, float] = {}
        self._readers: dict[int, asyncio.Task[None]] = {}
        self._stopping: set[int] = set()
        self._ticks = 0
        self._last_upkeep = 0.0

    @property
    def owned(self) -> list[int]:
        """The partitions this member reads now."""
        return sorted(self._readers)

    def _fresh(self, partition: int) -> bool:
        sent = self._renewed.get(partition)
        return sent is not None and self._clock.monotonic() < sent + self._ttl - self._margin

    async def run(self) -> None:
        """Heartbeat and rebalance until cancelled; on exit, release and leave."""
        try:
            while True:
                try:
                    await self._tick()
                except Exception as exc:  # keep the membership going through any failure
                    log.warning(
                        "events %s/%s: membership tick failed: %s", self._topic, self._group, exc
                    )
                await self._clock.sleep(self._ttl / 3)
        finally:
            await self._leave()

    async def _tick(self) -> None:
        members = await self._engine.heartbeat(self._topic, self._group, self.name, self._ttl)
        wanted = owned_partitions(self._partitions, members, self.name)
        leaving = [p for p in self._readers if p not in wanted]
        await asyncio.gather(*(self._stop(p, release=True) for p in leaving))
        for partition in sorted(wanted):
            sent = self._clock.monotonic()
            ok = await self._engine.claim_partition(
                self._topic, self._group, partition, self.name, self._ttl
            )
            if ok:
                self._renewed[partition] = sent
                task = self._readers.get(partition)
                if task is None or task.done():
                    self._readers[partition] = asyncio.create_task(
                        self._read(partition), name=f"keel-events-{self._topic}-{partition}"
                    )
            elif partition in self._readers:
                await self._stop(partition, release=False)
        self._ticks += 1
        if self._ticks % _STRAYS_EVERY == 0:
            await self._recover_strays()
        if self._clock.monotonic() - self._last_upkeep >= self._retention.every_s:
            self._last_upkeep = self._clock.monotonic()
            await self._upkeep()

    async def _read(self, partition: int) -> None:
        """Feed one partition: its pending entries first (takeover), then new ones.

        Stops between reads (never in the middle of one: a read cut off after
        the engine delivered would leave entries pending for nobody) when the
        claim is stale or the member gives the partition up.
        """
        engine, topic, group = self._engine, self._topic, self._group
        self._dispatcher.adopt(partition)
        taken = False
        while self._fresh(partition) and partition not in self._stopping:
            try:
                if not taken:
                    entries = await engine.claim_pending(
                        topic, partition, group, self.name, 0.0, _TAKEOVER_COUNT
                    )
                    taken = True
                elif not await self._dispatcher.wait_room(_ROOM_WAIT_S):
                    continue
                else:
                    await self._dispatcher.acks.flush(partition)
                    count = min(self._dispatcher.room(), self._settings.batch)
                    entries = await engine.read_group(
                        topic, partition, group, self.name, count, self._settings.block_s
                    )
                await self._dispatcher.feed(partition, entries)
                if self._settings.linger_s and 0 < len(entries) < self._settings.batch:
                    # a trickle: let a few more arrive than one entry per read
                    await self._clock.sleep(self._settings.linger_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a reader never dies of a store hiccup or a bad record
                log.warning("events %s/%s/%d: read failed: %s", topic, group, partition, exc)
                await self._clock.sleep(_ERROR_PAUSE_S)

    async def _stop(self, partition: int, *, release: bool, drain: bool = True) -> None:
        task = self._readers.pop(partition, None)
        self._renewed.pop(partition, None)
        if task is not None:
            self._stopping.add(partition)
            try:  # let the reader finish its read; cancel only one that hangs
                async with asyncio.timeout(self._settings.block_s + _STOP_GRACE_S):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
            except Exception:  # the reader logged its own failure
                pass
            finally:
                self._stopping.discard(partition)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._dispatcher.drop(partition, timeout_s=self._ttl / 2 if drain else 0.0)
        with contextlib.suppress(Exception):  # unsent acks: their events are delivered again
            await self._dispatcher.acks.flush(partition)
        if release:
            with contextlib.suppress(Exception):  # the claim expires on its own anyway
                await self._engine.release_partition(self._topic, self._group, partition, self.name)

    async def _recover_strays(self) -> None:
        """Re-claim entries pending on an owned partition that this member does not hold.

        A read whose answer was lost (a timeout after the engine delivered)
        leaves entries pending under this member's name that nobody handles;
        once they have been idle for a TTL they are taken back and fed. The
        lag gauge is refreshed on the way.
        """
        total = 0
        for partition in self.owned:
            lag = await self._engine.lag(self._topic, partition, self._group)
            total += lag.pending + lag.undelivered
            if lag.pending > self._dispatcher.held(partition):
                entries = await self._engine.claim_pending(
                    self._topic, partition, self._group, self.name, self._ttl, lag.pending
                )
                await self._dispatcher.feed(partition, entries)
        self._metrics.lag.labels(self._topic, self._group).set(total)

    async def _upkeep(self) -> None:
        """Trim the owned partitions (retention)."""
        now = self._clock.time()
        keep = self._retention
        for partition in self.owned:
            min_id = None
            if keep.max_age_s is not None:
                min_id = await self._engine.id_at(self._topic, partition, now - keep.max_age_s)
            await self._engine.trim(self._topic, partition, max_len=keep.max_len, min_id=min_id)

    async def _leave(self) -> None:
        stops = [self._stop(p, release=True, drain=False) for p in list(self._readers)]
        await asyncio.gather(*stops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._engine.heartbeat(self._topic, self._group, self.name, 0)

    def __repr__(self) -> str:
        return f"Member({self.name!r}, {self._topic}/{self._group}, owns={self.owned})"
