"""Discovery: a local cache of each service's instances, fed by watches.

The first lookup of a service reads its instances and health marks in one
transaction (one revision), then watches both prefixes from the next
revision, so no change between the read and the watch is lost. Every lookup
after that is served from memory with no I/O. While the store is unreachable
the last known list is served and marked stale; a snapshot file per service
(as Nacos's failover snapshot) lets a process start with the last list when
the store is down at boot.

Filtering: DRAINING instances and instances the health checker marked
failing are left out, except that when the healthy share of a service falls
under its protection threshold every UP instance is returned (Nacos's
protection threshold: better to spread load over all than to crush the few).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

from keel._records import Rejected, decode, report
from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CompactedError, KeelError, StoreClosedError, ValidationError
from keel.observe import capability_metrics
from keel.registry._decode import (
    HEALTH_AREA,
    REGISTRY_AREA,
    decode_health_mark,
    decode_instance,
)
from keel.registry._model import (
    HEALTH,
    UP,
    Instance,
    check_service_name,
    service_prefix,
)
from keel.registry._snapshot import read_snapshot, write_snapshot
from keel.store import Event, EventType, KeyValue, Range, Store, merged

__all__ = ["Discovery", "DiscoveryStatistics", "ServiceStatistics", "select"]

log = logging.getLogger("keel.registry.discovery")
_RETRY_S = 0.5
_PROBE_KEY = "registry/.probe"


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    """What the cache knows of one service.

    Attributes:
        instances: instances in the cache (any status).
        failing: instances marked failing by the health checker.
        revision: the store revision the cache reflects.
        stale: True while the store is unreachable (the list may be outdated).
        from_snapshot: True if the list came from the snapshot file.
    """

    instances: int
    failing: int
    revision: int
    stale: bool
    from_snapshot: bool


@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    """Per-service cache statistics."""

    services: dict[str, ServiceStatistics]


def select(
    instances: Iterable[Instance],
    failing: set[str],
    *,
    protect_threshold: float = 0.0,
    zone: str | None = None,
    tags: Iterable[str] = (),
    version: str | None = None,
    include_draining: bool = False,
) -> tuple[Instance, ...]:
    """Filter a service's instances (pure): status, health, protection, zone, tags, version."""
    wanted = set(tags)
    pool = [
        i
        for i in instances
        if (include_draining or i.status == UP)
        and (zone is None or i.zone == zone)
        and (version is None or i.version == version or _version_match(i.version, version))
        and wanted.issubset(i.tags)
    ]
    healthy = [i for i in pool if i.id not in failing]
    if pool and len(healthy) / len(pool) < protect_threshold:
        return tuple(sorted(pool, key=lambda i: i.id))
    return tuple(sorted(healthy, key=lambda i: i.id))


def _version_match(have: str, pattern: str) -> bool:
    return pattern.endswith("*") and have.startswith(pattern[:-1])


@dataclass
class _Cache:
    service: str
    instances: dict[str, Instance] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    revision: int = 0
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    error: KeelError | None = None
    from_snapshot: bool = False
    subscribers: list[asyncio.Queue[None]] = field(default_factory=list)
    selected: tuple[Instance, ...] | None = None

    def apply(self, event: Event) -> None:
        key = event.kv.key
        if key.startswith(HEALTH):
            if event.type is EventType.PUT:
                self._mark(event.kv)
            else:
                self._unmark(key)
        elif event.type is EventType.PUT:
            self._put(event.kv)
        else:
            self.instances.pop(key.removeprefix(service_prefix(self.service)), None)
        self.revision = max(self.revision, event.revision)

    def _put(self, kv: KeyValue) -> None:
        instance = decode(REGISTRY_AREA, kv.key, kv.value, partial(decode_instance, kv.key))
        if isinstance(instance, Rejected):
            report(instance)  # and drop what the key held: it no longer describes an instance
            self.instances.pop(kv.key.removeprefix(service_prefix(self.service)), None)
        else:
            self.instances[instance.id] = instance

    def _mark(self, kv: KeyValue) -> None:
        mark = decode(HEALTH_AREA, kv.key, kv.value, partial(decode_health_mark, kv.key))
        if isinstance(mark, Rejected):
            report(mark)  # a malformed mark hides nothing
            self._unmark(kv.key)
        elif mark.failing:
            self.failing.add(mark.instance_id)
        else:
            self.failing.discard(mark.instance_id)

    def _unmark(self, key: str) -> None:
        self.failing.discard(key.removeprefix(f"{HEALTH}{self.service}/"))

    def load(self, kvs: list[KeyValue], health: list[KeyValue], revision: int) -> None:
        self.instances.clear()
        self.failing.clear()
        for kv in kvs:
            self._put(kv)
        for kv in health:
            self._mark(kv)
        self.revision = revision
        self.from_snapshot = False

    def notify(self) -> None:
        self.selected = None  # the default selection is rebuilt on the next lookup
        capability_metrics().discovered(self.service, len(self.instances))
        for queue in self.subscribers:
            if queue.empty():
                queue.put_nowait(None)


class Discovery:
    """Find instances of services; ``async with Discovery(store) as discovery``.

    Args:
        store: the store.
        snapshot_dir: where to keep one JSON snapshot per service (None: no snapshots).
        protect_threshold: default protection threshold (0..1); see :func:`select`.
        thresholds: per-service protection thresholds.
        probe_interval_s: how often the store's reachability is checked, to
            mark caches stale during an outage.
        clock: time source.
    """

    def __init__(
        self,
        store: Store,
        *,
        snapshot_dir: str | os.PathLike[str] | None = None,
        protect_threshold: float = 0.0,
        thresholds: dict[str, float] | None = None,
        probe_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        for value in [protect_threshold, *(thresholds or {}).values()]:
            if not 0.0 <= value <= 1.0:
                raise ValidationError(f"protection threshold {value!r}: use a fraction 0..1")
        self.store = store
        self._snapshots = Path(snapshot_dir) if snapshot_dir is not None else None
        self._threshold = protect_threshold
        self._thresholds = dict(thresholds or {})
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._caches: dict[str, _Cache] = {}
        self._stale = False
        self._tasks: asyncio.TaskGroup | None = None
        self._own: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        """True between entering and leaving ``async with``."""
        return self._tasks is not None

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._own = [self._tasks.create_task(self._probe(), name="keel-discovery-probe")]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tasks is not None:
            for task in self._own:
                task.cancel()
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None

    async def instances(
        self,
        service: str,
        *,
        zone: str | None = None,
        tags: Iterable[str] = (),
        version: str | None = None,
        include_draining: bool = False,
    ) -> tuple[Instance, ...]:
        """The instances of ``service`` that should get traffic (cached after the first call).

        The unfiltered answer is the same tuple object until the service changes,
        so balancers can skip their per-list bookkeeping.

        Args:
            zone: only this zone.
            tags: only instances carrying all these tags.
            version: only this version (``2.*`` matches a prefix).
            include_draining: also return DRAINING instances.
        """
        cache = await self._cache(service)
        if zone is None and not tags and version is None and not include_draining:
            return self._default(cache)
        return select(
            cache.instances.values(),
            cache.failing,
            protect_threshold=self._thresholds.get(service, self._threshold),
            zone=zone,
            tags=tags,
            version=version,
            include_draining=include_draining,
        )

    def _default(self, cache: _Cache) -> tuple[Instance, ...]:
        if cache.selected is None:
            cache.selected = select(
                cache.instances.values(),
                cache.failing,
                protect_threshold=self._thresholds.get(cache.service, self._threshold),
            )
        return cache.selected

    async def all_instances(self, service: str) -> list[Instance]:
        """Every cached instance of ``service``, whatever its status or health."""
        cache = await self._cache(service)
        return sorted(cache.instances.values(), key=lambda i: i.id)

    async def failing(self, service: str) -> set[str]:
        """Ids of the instances the health checker marked failing."""
        return set((await self._cache(service)).failing)

    async def subscribe(self, service: str) -> AsyncIterator[tuple[Instance, ...]]:
        """Yield the service's instance list now and after every change (bursts coalesced)."""
        cache = await self._cache(service)
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        cache.subscribers.append(queue)
        try:
            while True:
                yield await self.instances(service)
                await queue.get()
        finally:
            cache.subscribers.remove(queue)

    async def _cache(self, service: str) -> _Cache:
        cache = self._caches.get(service)
        if cache is None:
            check_service_name(service)
            if self._tasks is None:
                raise StoreClosedError("discovery is not started: use 'async with Discovery(...)'")
            cache = self._caches[service] = _Cache(service)
            self._own.append(
                self._tasks.create_task(self._follow(cache), name=f"keel-discovery-{service}")
            )
        await cache.attempted.wait()
        if not cache.loaded.is_set():
            assert cache.error is not None
            raise cache.error
        return cache

    async def _follow(self, cache: _Cache) -> None:
        """Keep one service's cache current, forever: load, watch, reload on compaction."""
        while True:
            try:
                revision = await self._load(cache)
                await self._watch(cache, revision + 1)
            except CompactedError:
                continue
            except StoreClosedError:
                return
            except KeelError as exc:
                if not cache.loaded.is_set():
                    self._load_snapshot(cache)
                    cache.error = exc
                    cache.attempted.set()
                log.info("discovery of %s interrupted (%s); retrying", cache.service, exc)
                await self._clock.sleep(_RETRY_S)

    async def _load(self, cache: _Cache) -> int:
        prefix = service_prefix(cache.service)
        result = await self.store.txn([], [Range(prefix), Range(f"{HEALTH}{cache.service}/")])
        kvs, health = result.results
        assert isinstance(kvs, list) and isinstance(health, list)
        cache.load(kvs, health, result.revision)
        cache.loaded.set()
        cache.attempted.set()
        cache.notify()
        self._save_snapshot(cache)
        return result.revision

    async def _watch(self, cache: _Cache, start: int) -> None:
        prefixes = (service_prefix(cache.service), f"{HEALTH}{cache.service}/")
        watches = [self.store.watch(p, prefix=True, start_revision=start) for p in prefixes]
        async with contextlib.AsyncExitStack() as stack:
            for watch in watches:
                await stack.enter_async_context(watch)
            async for event, more in merged(watches):
                cache.apply(event)
                if not more:
                    cache.notify()
                    self._save_snapshot(cache)

    async def _probe(self) -> None:
        while True:
            try:
                async with asyncio.timeout(max(0.5, self._probe_interval_s)):
                    await self.store.get(_PROBE_KEY)
                self._stale = False
            except StoreClosedError:
                return
            except (KeelError, TimeoutError):
                self._stale = True
            await self._clock.sleep(self._probe_interval_s)

    def _snapshot_path(self, service: str) -> Path | None:
        return None if self._snapshots is None else self._snapshots / f"{service}.json"

    def _save_snapshot(self, cache: _Cache) -> None:
        path = self._snapshot_path(cache.service)
        if path is not None and not cache.from_snapshot:
            write_snapshot(path, cache.revision, cache.instances.values(), cache.failing)

    def _load_snapshot(self, cache: _Cache) -> None:
        path = self._snapshot_path(cache.service)
        snapshot = None if path is None else read_snapshot(path, cache.service)
        if snapshot is None:
            return
        kvs, failing, revision = snapshot
        cache.load(kvs, [], max(revision, 0))
        cache.failing = set(failing) & set(cache.instances)
        cache.from_snapshot = True
        cache.loaded.set()
        cache.attempted.set()
        cache.notify()

    def cached(self, service: str) -> tuple[Instance, ...] | None:
        """The cached instances of ``service`` without any I/O, or None if not cached yet."""
        cache = self._caches.get(service)
        if cache is None or not cache.loaded.is_set():
            return None
        return self._default(cache)

    def statistics(self) -> DiscoveryStatistics:
        """Per-service cache counters and staleness."""
        return DiscoveryStatistics(
            {
                name: ServiceStatistics(
                    instances=len(c.instances),
                    failing=len(c.failing),
                    revision=c.revision,
                    stale=self._stale or c.from_snapshot,
                    from_snapshot=c.from_snapshot,
                )
                for name, c in self._caches.items()
            }
        )

    def __repr__(self) -> str:
        return f"<Discovery services={sorted(self._caches)} stale={self._stale}>"
