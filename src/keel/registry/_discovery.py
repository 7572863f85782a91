"""Discovery: a local cache of each service's instances, fed by watches.

The first lookup of a service reads its instances, health marks and operator
overrides in one transaction (one revision), then watches the three prefixes
from the next revision, so no change between the read and the watch is lost.
Every lookup after that is served from memory with no I/O: overrides are
merged into the instances when their events arrive (see ``_cache.py``), never
per lookup. While the store is unreachable
the last known list is served and marked stale; a snapshot file per service
(as Nacos's failover snapshot) lets a process start with the last list when
the store is down at boot.

Filtering: DRAINING instances and instances the health checker marked
failing are left out, except that when the healthy share of a service falls
under its protection threshold every UP instance is returned (Nacos's
protection threshold: better to spread load over all than to crush the few).

Operator overrides (``overrides/<service>/<instance-id>``, see
:class:`~keel.registry.Overrides`): the weight replaces the registered one,
a draining override makes the instance DRAINING, a disabled one takes it out.
Those instances leave every balanced list, :meth:`Discovery.cached` included,
even when that leaves none: the operator's intent wins over availability (as
Nacos: a service whose instances are all disabled has no instances), and the
protection threshold only weighs the instances left in. A person who disabled
the last instance meant it; quietly sending traffic there anyway would make
"disable" mean "disable unless it matters". :meth:`Discovery.all_instances`
still lists them, with the override on :attr:`Instance.override`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CompactedError, KeelError, StoreClosedError, ValidationError
from keel.registry._cache import ServiceCache, select
from keel.registry._model import Instance, check_service_name
from keel.registry._snapshot import read_snapshot, write_snapshot
from keel.store import Range, Store, merged

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
        self._caches: dict[str, ServiceCache] = {}
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
            include_draining: also return DRAINING instances (drained by their
                owner or by an operator; disabled ones never).
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

    def _default(self, cache: ServiceCache) -> tuple[Instance, ...]:
        if cache.selected is None:
            cache.selected = select(
                cache.instances.values(),
                cache.failing,
                protect_threshold=self._thresholds.get(cache.service, self._threshold),
            )
        return cache.selected

    async def all_instances(self, service: str) -> list[Instance]:
        """Every cached instance of ``service``, whatever its status, health or override.

        Overrides are applied (weight, DRAINING) and visible on
        :attr:`Instance.override` (``override.disabled`` for a disabled one).
        """
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

    async def _cache(self, service: str) -> ServiceCache:
        cache = self._caches.get(service)
        if cache is None:
            check_service_name(service)
            if self._tasks is None:
                raise StoreClosedError("discovery is not started: use 'async with Discovery(...)'")
            cache = self._caches[service] = ServiceCache(service)
            self._own.append(
                self._tasks.create_task(self._follow(cache), name=f"keel-discovery-{service}")
            )
        await cache.attempted.wait()
        if not cache.loaded.is_set():
            assert cache.error is not None
            raise cache.error
        return cache

    async def _follow(self, cache: ServiceCache) -> None:
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

    async def _load(self, cache: ServiceCache) -> int:
        result = await self.store.txn([], [Range(p) for p in cache.prefixes])
        kvs, health, overrides = result.results
        assert isinstance(kvs, list) and isinstance(health, list) and isinstance(overrides, list)
        cache.load(kvs, health, overrides, result.revision)
        cache.loaded.set()
        cache.attempted.set()
        cache.notify()
        self._save_snapshot(cache)
        return result.revision

    async def _watch(self, cache: ServiceCache, start: int) -> None:
        watches = [self.store.watch(p, prefix=True, start_revision=start) for p in cache.prefixes]
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

    def _save_snapshot(self, cache: ServiceCache) -> None:
        path = self._snapshot_path(cache.service)
        if path is not None and not cache.from_snapshot:
            write_snapshot(
                path,
                cache.revision,
                cache.registered.values(),
                cache.failing,
                cache.overrides.values(),
            )

    def _load_snapshot(self, cache: ServiceCache) -> None:
        path = self._snapshot_path(cache.service)
        snapshot = None if path is None else read_snapshot(path, cache.service)
        if snapshot is None:
            return
        kvs, failing, overrides, revision = snapshot
        cache.load(kvs, [], overrides, max(revision, 0))
        cache.failing = set(failing) & set(cache.instances)
        cache.from_snapshot = True
        cache.loaded.set()
        cache.attempted.set()
        cache.notify()

    def cached(self, service: str) -> tuple[Instance, ...] | None:
        """The cached instances of ``service`` without any I/O, or None if not cached yet.

        The same list as :meth:`instances` with no filter: overrides applied,
        disabled and draining instances left out, even when that leaves an
        empty tuple. The operator's intent wins over availability (as Nacos):
        someone who disabled the last instance meant it, and serving it anyway
        would make "disable" mean "disable unless it matters".
        """
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
