"""Consistent hashing with bounded loads, for sticky keys (sessions, caches, shards).

The ring (Karger et al., "Consistent Hashing and Random Trees", 1997) holds
``replicas`` virtual nodes per instance of weight 100 (ketama's 160 by default),
more or fewer in proportion to the weight. A key goes to the first virtual node
clockwise from its hash, so when one of ``n`` instances leaves only its own
keys (about ``1/n``) move, and a returning instance takes back the same keys.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
Bounded Loads", 2018; the scheme Vimeo put into HAProxy): with ``m`` calls in
flight, an instance takes a new one only while its own count stays within
``ceil(c * (m + 1) * weight / total_weight)``; otherwise the walk continues
clockwise to the next instance with room. A hot key thus spills over to the
ring's next instances instead of overloading one, and no instance ever holds
more than ``c`` times its share. Loads are the calls counted by ``track()``;
with nothing tracked this is plain consistent hashing.

Hashes are BLAKE2b (64 bits) of the UTF-8 key, identical in every process and
on every run (Python's ``hash()`` is salted per process), so all clients agree
on where a key lives.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from keel.balance._base import E, Endpoint, FeedbackBase, require
from keel.clock import Clock
from keel.errors import ValidationError

__all__ = ["ConsistentHash", "HashSettings", "HashStatistics", "key_hash"]


def key_hash(key: str | bytes) -> int:
    """The 64-bit ring position of ``key`` (BLAKE2b; stable across processes).

    Args:
        key: a string (hashed as UTF-8) or bytes.

    Returns:
        An integer in ``[0, 2**64)``.
    """
    data = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class HashSettings:
    """The ring's density and the load bound.

    Attributes:
        replicas: virtual nodes of an instance of weight 100 (others in
            proportion, at least one). More evens out the key shares; building
            the ring costs ``replicas`` hashes per instance.
        load_factor: ``c``, the bound on an instance's calls in flight as a
            multiple of its fair share (>= 1; 1.25 is the paper's example).
    """

    replicas: int = 160
    load_factor: float = 1.25

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 10_000:
            raise ValidationError(
                f"replicas must be between 1 and 10000 (160 is ketama's), got {self.replicas!r}"
            )
        if not (self.load_factor >= 1.0 and math.isfinite(self.load_factor)):
            raise ValidationError(
                f"load_factor must be a finite number >= 1 (try 1.25), got {self.load_factor!r}"
            )


@dataclass(frozen=True, slots=True)
class HashStatistics:
    """A snapshot of a :class:`ConsistentHash` balancer.

    Attributes:
        picks: calls to ``pick`` so far.
        tracked: instances with calls in flight.
        outstanding: calls tracked and not finished yet.
        successes: outcomes reported as ok.
        failures: outcomes reported as failed.
        ring_points: virtual nodes on the current ring.
        rebuilds: times the ring was rebuilt for a changed instance list.
        spilled: keyed picks that passed their first instance because it was full.
    """

    picks: int
    tracked: int
    outstanding: int
    successes: int
    failures: int
    ring_points: int
    rebuilds: int
    spilled: int


class _Ring:
    __slots__ = ("members", "owners", "points", "total_weight", "weights")

    def __init__(self, members: frozenset[tuple[str, int]], points: dict[str, list[int]]):
        self.members = members
        self.weights = dict(members)
        self.total_weight = sum(self.weights.values())
        # Sort plain ints (position << 20 | owner index), several times faster than
        # sorting (position, id) tuples; ids are sorted so ties break the same way
        # in every process.
        ids = sorted(points)
        merged = sorted((p << 20) | i for i, inst_id in enumerate(ids) for p in points[inst_id])
        self.points = [v >> 20 for v in merged]
        self.owners = [ids[v & 0xFFFFF] for v in merged]


class ConsistentHash(FeedbackBase):
    """Sticky picks by key on a hash ring, with loads bounded by ``c`` x the fair share.

    Args:
        settings: ring density and load bound (defaults: :class:`HashSettings`).
        clock: time source for tickets.
    """

    __slots__ = (
        "_by_id",
        "_for",
        "_ids",
        "_load",
        "_points",
        "_rebuilds",
        "_ring",
        "_rr",
        "_spilled",
        "_total",
        "_wts",
        "settings",
    )

    def __init__(self, settings: HashSettings | None = None, *, clock: Clock | None = None):
        super().__init__(clock)
        self.settings = settings if settings is not None else HashSettings()
        self._ring = _Ring(frozenset(), {})
        self._points: dict[tuple[str, int], list[int]] = {}
        self._by_id: dict[str, Endpoint] = {}
        self._for: object = None
        self._ids: list[str] = []
        self._wts: list[int] = []
        self._load: dict[str, int] = {}
        self._total = 0
        self._rebuilds = 0
        self._spilled = 0
        self._rr = itertools.count()

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Return the instance that owns ``key`` (or the next one with room).

        Args:
            instances: the candidates; the ring is rebuilt when their ids or
                weights change (passing the same tuple again skips the check).
            key: the sticky key; without one, picks go round robin.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        n = require(instances)
        self._picks += 1
        by_id = self._sync(instances)
        if key is None:
            return instances[next(self._rr) % n]
        ring = self._ring
        start = bisect.bisect_left(ring.points, key_hash(key))
        if start == len(ring.points):
            start = 0
        first = cast(E, by_id[ring.owners[start]])
        if self._total == 0:
            return first
        chosen = self._walk(start)
        if chosen != first.id:
            self._spilled += 1
        return cast(E, by_id[chosen])

    def _walk(self, start: int) -> str:
        """The first instance clockwise from ``start`` whose load stays under its bound."""
        ring, load = self._ring, self._load
        owners, size = ring.owners, len(ring.owners)
        wanted = self.settings.load_factor * (self._total + 1)
        total_weight = ring.total_weight
        seen: set[str] = set()
        for j in range(size):
            owner = owners[(start + j) % size]
            if owner in seen:
                continue
            # The 1e-9 keeps float noise (7.000000000000001) from adding a slot.
            cap = math.ceil(wanted * ring.weights[owner] / total_weight - 1e-9)
            if load.get(owner, 0) + 1 <= cap:
                return owner
            seen.add(owner)
            if len(seen) == len(ring.weights):
                break
        return owners[start]

    def _sync(self, instances: Sequence[E]) -> dict[str, Endpoint]:
        """Index ``instances`` by id and rebuild the ring if its members changed."""
        if instances is self._for and type(instances) is tuple:
            return self._by_id
        ids = [inst.id for inst in instances]
        wts = [inst.weight for inst in instances]
        if ids != self._ids or wts != self._wts:
            members = frozenset(zip(ids, wts, strict=True))
            if members != self._ring.members:
                self._rebuild(members)
            self._ids, self._wts = ids, wts
        by_id: dict[str, Endpoint] = dict(zip(ids, instances, strict=True))
        self._by_id, self._for = by_id, instances
        return by_id

    def _rebuild(self, members: frozenset[tuple[str, int]]) -> None:
        replicas = self.settings.replicas
        cache = {m: self._points.get(m) for m in members}
        for (inst_id, weight), pts in cache.items():
            if pts is None:
                count = max(1, round(replicas * weight / 100))
                cache[(inst_id, weight)] = [key_hash(f"{inst_id}#{i}") for i in range(count)]
        self._points = {m: p for m, p in cache.items() if p is not None}
        self._ring = _Ring(members, {i: self._points[(i, w)] for i, w in members})
        live = self._ring.weights
        self._load = {k: v for k, v in self._load.items() if k in live and v > 0}
        self._total = sum(self._load.values())
        self._rebuilds += 1

    def load(self, instance: Endpoint) -> int:
        """Calls to ``instance`` tracked and not yet finished."""
        return self._load.get(instance.id, 0)

    def _begin(self, instance: Endpoint) -> None:
        self._load[instance.id] = self._load.get(instance.id, 0) + 1
        self._total += 1

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        if not tracked:
            return
        count = self._load.get(instance.id, 0)
        if count > 1:
            self._load[instance.id] = count - 1
            self._total -= 1
        elif count == 1:
            del self._load[instance.id]
            self._total -= 1

    def statistics(self) -> HashStatistics:
        """Counters, loads and the ring's shape."""
        return HashStatistics(
            picks=self._picks,
            tracked=len(self._load),
            outstanding=self._total,
            successes=self._successes,
            failures=self._failures,
            ring_points=len(self._ring.points),
            rebuilds=self._rebuilds,
            spilled=self._spilled,
        )

    def __repr__(self) -> str:
        return (
            f"ConsistentHash(instances={len(self._ring.weights)}, "
            f"points={len(self._ring.points)}, outstanding={self._total}, "
            f"load_factor={self.settings.load_factor}, spilled={self._spilled})"
        )
