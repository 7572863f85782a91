"""The in-process store: the reference implementation of the contract.

Everything lives in one process's memory, so it is for tests, demos and
single-process programs. It is also the oracle of the conformance suite: its
behaviour is the contract, written as plainly as possible (a sorted key list,
a dict of records, an event log for history and watches).

History is kept as the event log with ``prev_kv`` on every event, so a read at
a past revision is the current state with the newer events undone.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import CompactedError, LeaseNotFoundError, ValidationError
from keel.store import (
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    LeaseInfo,
    Op,
    OpResult,
    Put,
    Range,
    Store,
    StoreStatus,
    StoreURL,
    TxnResult,
    Watch,
)
from keel.store._base import DEFAULT_MAX_VALUE_BYTES, DEFAULT_ROOT

__all__ = ["MemoryStore", "open_memory"]

_REAP_INTERVAL_S = 0.25
DEFAULT_HISTORY_LIMIT = 100_000


@dataclass(slots=True)
class _LeaseState:
    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


def _prefix_match(key: str, prefix: str, is_prefix: bool) -> bool:
    return key.startswith(prefix) if is_prefix else key == prefix


class _MemoryWatch(Watch):
    def __init__(self, store: MemoryStore, key: str, prefix: bool, start: int | None) -> None:
        super().__init__(key, prefix=prefix, start_revision=start)
        self._store = store

    def matches(self, key: str) -> bool:
        return _prefix_match(key, self.key, self.prefix)

    async def _open(self) -> None:
        self._store._attach(self)

    async def _close(self) -> None:
        self._store._watches.discard(self)


class MemoryStore(Store):
    """A store held in this process's memory.

    Args:
        root: the root prefix (keys are relative to it; it only namespaces here).
        max_value_bytes: the largest value accepted.
        clock: the clock that drives lease expiry.
        history_limit: events kept for past reads and watch replay; older
            revisions are compacted automatically.
    """

    backend = "memory"

    def __init__(
        self,
        *,
        root: str = DEFAULT_ROOT,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = SYSTEM_CLOCK,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        super().__init__(root=root, max_value_bytes=max_value_bytes)
        self._clock = clock
        self._history_limit = history_limit
        self._kvs: dict[str, KeyValue] = {}
        self._keys: list[str] = []
        self._revision = 1
        self._compact_revision = 0
        self._log: list[Event] = []
        self._leases: dict[int, _LeaseState] = {}
        self._lease_ids = itertools.count(random.randrange(1 << 40, 1 << 50))
        self._watches: set[_MemoryWatch] = set()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> MemoryStore:
        """Start the lease reaper (done by :func:`keel.connect`)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_forever(), name="keel-memory-lease-reaper"
            )
        return self

    # -- pure state changes -------------------------------------------------

    def _expire_due(self) -> None:
        now = self._clock.monotonic()
        for lease_id in [i for i, s in self._leases.items() if s.expires_at <= now]:
            self._revoke_now(lease_id)

    async def _reap_forever(self) -> None:
        while True:
            self._expire_due()
            await self._clock.sleep(_REAP_INTERVAL_S)

    def _commit(self, events: list[Event]) -> None:
        """Record events of the revision just applied and fan them out."""
        if not events:
            return
        self._log.extend(events)
        if len(self._log) > self._history_limit:
            cut = len(self._log) - self._history_limit
            self._compact_revision = max(self._compact_revision, self._log[cut].kv.mod_revision)
            self._log = [e for e in self._log if e.kv.mod_revision >= self._compact_revision]
        for watch in list(self._watches):
            delivered = False
            for event in events:
                if watch.matches(event.kv.key):
                    watch._deliver(event)
                    delivered = True
            if delivered:
                watch._behind(0)  # delivered as it commits

    def _apply_put(self, key: str, value: bytes, lease: int, rev: int) -> Event:
        prev = self._kvs.get(key)
        if prev is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
            bisect.insort(self._keys, key)
        else:
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
            if prev.lease and prev.lease != lease and prev.lease in self._leases:
                self._leases[prev.lease].keys.discard(key)
        if lease:
            self._leases[lease].keys.add(key)
        self._kvs[key] = kv
        return Event(EventType.PUT, kv, prev)

    def _apply_delete(self, key: str, rev: int) -> Event:
        prev = self._kvs.pop(key)
        del self._keys[bisect.bisect_left(self._keys, key)]
        if prev.lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(key)
        return Event(EventType.DELETE, KeyValue(key, b"", 0, rev, 0, 0), prev)

    def _select(self, key: str, prefix: bool) -> list[str]:
        if not prefix:
            return [key] if key in self._kvs else []
        lo = bisect.bisect_left(self._keys, key)
        out: list[str] = []
        for k in itertools.islice(self._keys, lo, None):
            if not k.startswith(key):
                break
            out.append(k)
        return out

    def _revoke_now(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id)
        if not state.keys:
            return
        self._revision += 1
        events = [self._apply_delete(k, self._revision) for k in sorted(state.keys)]
        self._commit(events)

    def _check_leases(self, ops: Iterable[Op]) -> None:
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseNotFoundError(
                    f"lease {op.lease} not found (expired or revoked): grant a new lease"
                )

    def _run_ops(self, ops: tuple[Op, ...]) -> tuple[list[OpResult], list[Event]]:
        rev = self._revision + 1
        results: list[OpResult] = []
        events: list[Event] = []
        for op in ops:
            if isinstance(op, Put):
                events.append(self._apply_put(op.key, op.value, op.lease or 0, rev))
                results.append(None)
            elif isinstance(op, Get):
                results.append(self._kvs.get(op.key))
            elif isinstance(op, Range):
                keys = self._select(op.key, op.prefix)
                if op.limit:
                    keys = keys[: op.limit]
                results.append([self._kvs[k] for k in keys])
            elif isinstance(op, Delete):
                keys = self._select(op.key, op.prefix)
                events.extend(self._apply_delete(k, rev) for k in keys)
                results.append(len(keys))
        if events:
            self._revision = rev
        return results, events

    def _state_at(self, revision: int) -> dict[str, KeyValue]:
        if revision > self._revision:
            raise ValidationError(
                f"revision {revision} is in the future (current {self._revision})"
            )
        if revision < self._compact_revision:
            raise CompactedError(self._compact_revision)
        state = dict(self._kvs)
        for event in reversed(self._log):
            if event.kv.mod_revision <= revision:
                break
            if event.prev_kv is None:
                state.pop(event.kv.key, None)
            else:
                state[event.kv.key] = event.prev_kv
        return state

    # -- backend hooks --------------------------------------------------------

    async def _do_put(self, key: str, value: bytes, lease: int) -> int:
        result = await self._do_txn((), (Put(key, value, lease),), ())
        return result.revision

    async def _do_get(self, key: str) -> KeyValue | None:
        self._expire_due()
        return self._kvs.get(key)

    async def _do_range(
        self, key: str, prefix: bool, limit: int | None, revision: int | None
    ) -> tuple[list[KeyValue], int]:
        self._expire_due()
        if revision is None:
            kvs = [self._kvs[k] for k in self._select(key, prefix)]
        else:
            state = self._state_at(revision)
            kvs = [state[k] for k in sorted(state) if _prefix_match(k, key, prefix)]
        return (kvs[:limit] if limit else kvs), self._revision

    async def _do_delete(self, key: str, prefix: bool) -> int:
        result = await self._do_txn((), (Delete(key, prefix),), ())
        count = result.results[0]
        assert isinstance(count, int)
        return count

    async def _do_txn(
        self, compare: tuple[Compare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
    ) -> TxnResult:
        self._expire_due()
        ok = all(c.holds(self._kvs.get(c.key)) for c in compare)
        ops = success if ok else failure
        self._check_leases(ops)
        results, events = self._run_ops(ops)
        self._commit(events)
        return TxnResult(ok, self._revision, tuple(results))

    async def _do_grant(self, ttl: int) -> Lease:
        self._expire_due()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _LeaseState(ttl, self._clock.monotonic() + ttl)
        return Lease(lease_id, ttl)

    def _live_lease(self, lease_id: int) -> _LeaseState:
        self._expire_due()
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseNotFoundError(f"lease {lease_id} not found (expired or revoked)")
        return state

    async def _do_keepalive(self, lease_id: int) -> int:
        state = self._live_lease(lease_id)
        state.expires_at = self._clock.monotonic() + state.ttl
        return state.ttl

    async def _do_revoke(self, lease_id: int) -> None:
        self._live_lease(lease_id)
        self._revoke_now(lease_id)

    async def _do_time_to_live(self, lease_id: int) -> LeaseInfo | None:
        self._expire_due()
        state = self._leases.get(lease_id)
        if state is None:
            return None
        left = math.ceil(max(0.0, state.expires_at - self._clock.monotonic()))
        return LeaseInfo(lease_id, left, state.ttl, tuple(sorted(state.keys)))

    async def _do_leases(self) -> list[int]:
        self._expire_due()
        return sorted(self._leases)

    def _make_watch(self, key: str, prefix: bool, start_revision: int | None) -> Watch:
        return _MemoryWatch(self, key, prefix, start_revision)

    def _attach(self, watch: _MemoryWatch) -> None:
        """Replay history from the watch's start revision, then subscribe (no await between)."""
        self._expire_due()
        if watch.start_revision is None:
            watch.start_revision = self._revision + 1
        elif watch.start_revision < self._compact_revision:
            watch._fail(CompactedError(self._compact_revision))
            return
        if watch.start_revision <= self._revision:
            idx = bisect.bisect_left(self._log, watch.start_revision, key=lambda e: e.revision)
            last = 0
            for event in itertools.islice(self._log, idx, None):
                if watch.matches(event.kv.key):
                    watch._deliver(event)
                    last = event.kv.mod_revision
            if last:
                watch._behind(self._revision - last)
        self._watches.add(watch)

    async def _do_compact(self, revision: int) -> None:
        if revision > self._revision:
            raise ValidationError(
                f"cannot compact at revision {revision}: it is in the future "
                f"(current {self._revision})"
            )
        if revision <= self._compact_revision:
            raise CompactedError(self._compact_revision)
        self._compact_revision = revision
        self._log = [e for e in self._log if e.revision >= revision]

    async def _do_status(self) -> StoreStatus:
        self._expire_due()
        size = sum(len(k) + len(kv.value) for k, kv in self._kvs.items())
        return StoreStatus(
            backend="memory",
            endpoint="memory://",
            root=self.root,
            revision=self._revision,
            compact_revision=self._compact_revision,
            keys=len(self._kvs),
            leases=len(self._leases),
            size_bytes=size,
            details={"history_events": str(len(self._log))},
        )

    async def _do_close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for watch in list(self._watches):
            watch._fail(StopAsyncIteration())
        self._watches.clear()

    def __repr__(self) -> str:
        return (
            f"<MemoryStore root={self.root!r} revision={self._revision} keys={len(self._kvs)} "
            f"leases={len(self._leases)} watches={len(self._watches)}"
            f"{' closed' if self._closed else ''}>"
        )


async def open_memory(url: StoreURL, **options: Any) -> MemoryStore:
    """Open a memory store for a parsed ``memory://`` URL (used by :func:`keel.connect`)."""
    if "history_limit" in url.options:
        options.setdefault("history_limit", int(url.options["history_limit"]))
    store = MemoryStore(root=url.root, max_value_bytes=url.max_value_bytes, **options)
    return await store.start()
