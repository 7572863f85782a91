"""Where idempotency records live: the keel store, or Redis.

Both give the same four operations, each one atomic on its engine:

- ``claim``: create the key's in-progress record unless the key exists (store:
  one ``txn`` comparing the key absent, the record on a lease of ``lease_s``;
  Redis: ``SET NX PX``); else return the existing record, decoded strictly.
  An undecodable record is reported and replaced by the claim, once.
- ``renew``: keep the in-progress record alive while the request runs.
- ``finish``: replace *our* in-progress record (compared by value) with the
  final one, kept ``ttl_s``.
- ``release``: delete *our* in-progress record (the request failed: a retry runs).

An in-progress record expires with its lease, so a crashed first request does
not block its key for longer than ``lease_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from keel._records import Rejected, decode, report
from keel.idempotency._record import Record, decode_record, encode_record
from keel.store import Compare, Delete, Get, KeyValue, Put, Store

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Backend", "Claim", "RedisBackend", "StoreBackend"]

_AREA = "idempotency"


@dataclass(slots=True)
class Claim:
    """An in-progress record this process wrote: its key, exact bytes and lease."""

    key: str
    raw: bytes
    lease: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """The storage of idempotency records."""

    async def claim(self, name: str, record: Record, lease_s: float) -> Claim | Record:
        """Claim ``name`` for a new request, or return the record already there."""
        ...

    async def renew(self, claim: Claim, lease_s: float) -> None:
        """Extend the in-progress record's life."""
        ...

    async def finish(self, claim: Claim, record: Record, ttl_s: float) -> bool:
        """Replace the claim with ``record``; False if the claim was lost meanwhile."""
        ...

    async def release(self, claim: Claim) -> None:
        """Delete the claim (if still ours)."""
        ...


def _decoded(key: str, value: bytes) -> Record | None:
    found = decode(_AREA, key, value, decode_record)
    if isinstance(found, Rejected):
        report(found)
        return None
    return found


class StoreBackend:
    """Records in the keel store under ``idempotency/<namespace>/<key-hash>``."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.prefix = f"idempotency/{namespace}/"

    async def claim(self, name: str, record: Record, lease_s: float) -> Claim | Record:
        key = self.prefix + name
        raw = encode_record(record)
        lease = await self.store.grant(max(1, math.ceil(lease_s)))
        compare = Compare.absent(key)
        for _ in range(3):
            result = await self.store.txn([compare], [Put(key, raw, lease=lease.id)], [Get(key)])
            if result.succeeded:
                return Claim(key, raw, lease.id)
            kv = result.results[0]
            if not isinstance(kv, KeyValue):
                compare = Compare.absent(key)  # gone meanwhile (expired): try again
                continue
            existing = _decoded(key, kv.value)
            if existing is not None:
                await self.store.revoke(lease.id)
                return existing
            compare = Compare.mod_revision(key, "==", kv.mod_revision)  # replace the bad record
        await self.store.revoke(lease.id)
        raise RuntimeError(f"idempotency key {key!r} keeps changing: retry the request")

    async def renew(self, claim: Claim, lease_s: float) -> None:
        await self.store.keepalive(claim.lease)

    async def finish(self, claim: Claim, record: Record, ttl_s: float) -> bool:
        lease = await self.store.grant(max(1, math.ceil(ttl_s)))
        result = await self.store.txn(
            [Compare.value(claim.key, "==", claim.raw)],
            [Put(claim.key, encode_record(record), lease=lease.id)],
            [],
        )
        await self.store.revoke(claim.lease if result.succeeded else lease.id)
        return result.succeeded

    async def release(self, claim: Claim) -> None:
        await self.store.txn([Compare.value(claim.key, "==", claim.raw)], [Delete(claim.key)], [])
        await self.store.revoke(claim.lease)


# Compare-and-set / compare-and-delete / compare-and-extend of our own record.
_CAS = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0"  # noqa: E501
_CAD = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_CAX = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"  # noqa: E501


class RedisBackend:
    """Records in Redis under ``<prefix>idempotency/<namespace>/<key-hash>`` (``SET NX PX``)."""

    def __init__(self, redis: Redis, namespace: str, *, prefix: str = "keel:") -> None:
        self.redis = redis
        self.prefix = f"{prefix}idempotency/{namespace}/"

    async def claim(self, name: str, record: Record, lease_s: float) -> Claim | Record:
        key = self.prefix + name
        raw = encode_record(record)
        ms = max(1, int(lease_s * 1000))
        for _ in range(3):
            if await self.redis.set(key, raw, nx=True, px=ms):
                return Claim(key, raw)
            value = await self.redis.get(key)
            if value is None:
                continue  # expired meanwhile: try again
            existing = _decoded(key, value if isinstance(value, bytes) else value.encode())
            if existing is not None:
                return existing
            if await self.redis.eval(_CAS, 1, key, value, raw, ms):
                return Claim(key, raw)
        raise RuntimeError(f"idempotency key {key!r} keeps changing: retry the request")

    async def renew(self, claim: Claim, lease_s: float) -> None:
        await self.redis.eval(_CAX, 1, claim.key, claim.raw, max(1, int(lease_s * 1000)))

    async def finish(self, claim: Claim, record: Record, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        done = await self.redis.eval(_CAS, 1, claim.key, claim.raw, encode_record(record), ms)
        return bool(done)

    async def release(self, claim: Claim) -> None:
        await self.redis.eval(_CAD, 1, claim.key, claim.raw)
