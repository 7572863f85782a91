"""The store engine: keel.events on the keel Store contract (memory, sqlite, etcd).

The embedded default, for development and modest volumes (see
``docs/events.md``). Every change that touches several keys is one store
transaction guarded by compares (appends compare the partition's sequence
counter; group changes compare the cursor's ``mod_revision``), retried on
conflict, so concurrent processes never lose or duplicate an id or a
delivery. The key layout is in :mod:`keel.events._store_records`.

The store has no "range from a key" read, but sequence numbers are dense
(trims only remove a prefix), so reads fetch the wanted keys by name in one
transaction of ``Get`` ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import NotFoundError, ValidationError
from keel.events._engine import END, START, Entry, GroupLag
from keel.events._model import check_group, check_partitions, check_topic
from keel.events._store_appends import GroupCommit
from keel.events._store_members import Members, Wakeups
from keel.events._store_records import (
    Cursor,
    Pending,
    TopicMeta,
    at_seq,
    cursor_key,
    decode_cursor,
    decode_entry,
    decode_seq,
    decode_topic,
    encode_entry,
    entry_key,
    entry_prefix,
    parse_position,
    seq_id,
    seq_key,
    seq_of,
    topic_key,
)
from keel.store import Compare, Delete, Get, KeyValue, Op, Put, Range, Store

__all__ = ["StoreEngine"]

_BATCH = 100  # entries per transaction (etcd allows 128 ops)
_BATCH_BYTES = 1024 * 1024  # etcd's request limit is 1.5 MiB


class StoreEngine:
    """The :class:`~keel.events.Engine` contract on a keel :class:`~keel.store.Store`.

    Args:
        store: the store (the engine does not close it).
        clock: wall time for append times and pending idle times.
    """

    def __init__(self, store: Store, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.name = f"store:{type(store).__name__.removesuffix('Store').lower() or 'store'}"
        self._clock = clock
        self._partitions: dict[str, int] = {}
        self._members = Members(store, clock)
        self._wakeups = Wakeups(store, clock)
        self._appends = GroupCommit(self._append_batch, max_records=_BATCH, max_bytes=_BATCH_BYTES)
        self._tails: dict[str, tuple[int, int]] = {}  # seq key -> (last seq, mod revision)

    # topics

    async def create_topic(self, topic: str, partitions: int) -> int:
        """Create the topic's meta record unless it exists; return its partition count."""
        check_topic(topic)
        check_partitions(partitions)
        meta = TopicMeta(partitions=partitions, created_at=self._clock.time())
        key = topic_key(topic)
        await self.store.txn([Compare.absent(key)], [Put(key, msgspec.json.encode(meta))])
        found = await self.partitions(topic)
        if found is None:
            raise ValidationError(f"topic record {key!r} is malformed: delete it and retry")
        return found

    async def partitions(self, topic: str) -> int | None:
        """The topic's partition count, or None."""
        if topic in self._partitions:
            return self._partitions[topic]
        kv = await self.store.get(topic_key(topic))
        meta = None if kv is None else decode_topic(kv.key, kv.value)
        if meta is None:
            return None
        self._partitions[topic] = meta.partitions
        return meta.partitions

    async def topics(self) -> list[str]:
        """Every topic with a valid meta record, sorted."""
        kvs, _ = await self.store.range("events-topics/")
        return sorted(
            kv.key.removeprefix("events-topics/")
            for kv in kvs
            if decode_topic(kv.key, kv.value) is not None
        )

    async def _check(self, topic: str, partition: int) -> None:
        count = await self.partitions(topic)
        if count is None:
            raise NotFoundError(f"topic {topic!r} does not exist: create it first")
        if not 0 <= partition < count:
            raise ValidationError(f"partition {partition} of {topic!r} is outside 0..{count - 1}")

    # entries

    async def append(self, topic: str, partition: int, records: Sequence[bytes]) -> list[str]:
        """Append in transactions of up to 100 records or 1 MiB, each atomic.

        Concurrent appends to one partition share transactions (``_store_appends.py``).
        """
        await self._check(topic, partition)
        if not records:
            return []
        return await self._appends.append(topic, partition, records)

    async def _append_batch(self, topic: str, partition: int, records: list[bytes]) -> list[str]:
        key = seq_key(topic, partition)
        tail = self._tails.pop(key, None)  # this process's last append: no read needed
        while True:
            if tail is None:
                kv = await self.store.get(key)
                tail = (decode_seq(key, None if kv is None else kv.value), 0)
                if kv is not None:
                    tail = (tail[0], kv.mod_revision)
            last, rev = tail
            guard = Compare.absent(key) if rev == 0 else Compare.mod_revision(key, "==", rev)
            now = self._clock.time()
            seqs = range(last + 1, last + 1 + len(records))
            ops: list[Op] = [Put(key, str(seqs[-1]).encode())]
            ops += [
                Put(entry_key(topic, partition, s), encode_entry(now, r))
                for s, r in zip(seqs, records, strict=True)
            ]
            done = await self.store.txn([guard], ops)
            if done.succeeded:
                self._tails[key] = (seqs[-1], done.revision)
                return [seq_id(s) for s in seqs]
            tail = None  # another writer appended: read the sequence again

    async def _bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(first retained seq, last seq); first = last + 1 when empty."""
        key = seq_key(topic, partition)
        got = await self.store.txn([], [Get(key), Range(entry_prefix(topic, partition), limit=1)])
        seq_kv, firsts = got.results
        last = decode_seq(key, seq_kv.value if isinstance(seq_kv, KeyValue) else None)
        first = seq_of(firsts[0].key) if isinstance(firsts, list) and firsts else last + 1
        return first, last

    async def _fetch(self, topic: str, partition: int, seqs: Sequence[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for start in range(0, len(seqs), _BATCH):
            chunk = seqs[start : start + _BATCH]
            got = await self.store.txn([], [Get(entry_key(topic, partition, s)) for s in chunk])
            for s, kv in zip(chunk, got.results, strict=True):
                if isinstance(kv, KeyValue):
                    found[s] = kv.value
        return found

    async def read(self, topic: str, partition: int, after: str, count: int) -> list[Entry]:
        """Up to ``count`` entries after ``after``, oldest first."""
        await self._check(topic, partition)
        first, last = await self._bounds(topic, partition)
        start = max(parse_position(after, last), first - 1) + 1
        seqs = list(range(start, min(last, start + count - 1) + 1))
        found = await self._fetch(topic, partition, seqs)
        return [Entry(seq_id(s), decode_entry(found[s])[1]) for s in seqs if s in found]

    # groups

    async def create_group(self, topic: str, group: str, start: str) -> None:
        """Create the group's cursor on every partition in one transaction."""
        check_group(group)
        count = await self.partitions(topic)
        if count is None:
            raise NotFoundError(f"topic {topic!r} does not exist: create it first")
        keys = [cursor_key(topic, group, p) for p in range(count)]
        while True:
            lasts = [(await self._bounds(topic, p))[1] for p in range(count)]
            cursors = [Cursor(last=parse_position(start, last)) for last in lasts]
            puts: list[Op] = [
                Put(k, msgspec.json.encode(c)) for k, c in zip(keys, cursors, strict=True)
            ]
            guards = [Compare.absent(keys[0])]
            if start == END:  # the ends read above must still be the ends
                guards += [at_seq(seq_key(topic, p), lasts[p]) for p in range(count)]
            got = await self.store.txn(guards, puts)
            if got.succeeded or await self.store.get(keys[0]) is not None:
                return

    async def groups(self, topic: str) -> list[str]:
        """The topic's groups, sorted."""
        prefix = f"events-groups/{topic}/"
        kvs, _ = await self.store.range(prefix)
        return sorted({kv.key[len(prefix) :].rsplit("/", 1)[0] for kv in kvs})

    async def _cursor(self, topic: str, partition: int, group: str) -> tuple[Cursor, int]:
        await self._check(topic, partition)
        key = cursor_key(topic, group, partition)
        kv = await self.store.get(key)
        if kv is None:
            raise NotFoundError(f"group {group!r} does not exist on topic {topic!r}")
        return decode_cursor(key, kv.value), kv.mod_revision

    async def _cursor_and_bounds(
        self, topic: str, partition: int, group: str
    ) -> tuple[Cursor, int, int, int]:
        """:meth:`_cursor` and :meth:`_bounds` in one round trip."""
        await self._check(topic, partition)
        key, seq = cursor_key(topic, group, partition), seq_key(topic, partition)
        got = await self.store.txn(
            [], [Get(key), Get(seq), Range(entry_prefix(topic, partition), limit=1)]
        )
        cursor_kv, seq_kv, firsts = got.results
        if not isinstance(cursor_kv, KeyValue):
            raise NotFoundError(f"group {group!r} does not exist on topic {topic!r}")
        last = decode_seq(seq, seq_kv.value if isinstance(seq_kv, KeyValue) else None)
        first = seq_of(firsts[0].key) if isinstance(firsts, list) and firsts else last + 1
        return decode_cursor(key, cursor_kv.value), cursor_kv.mod_revision, first, last

    async def _save(
        self, topic: str, partition: int, group: str, cursor: Cursor, rev: int, reads: Sequence[int]
    ) -> dict[int, bytes] | None:
        """Write the cursor if unchanged since ``rev``; read entries ``reads`` in the same txn."""
        key = cursor_key(topic, group, partition)
        ops: list[Op] = [Put(key, msgspec.json.encode(cursor))]
        ops += [Get(entry_key(topic, partition, s)) for s in reads[:_BATCH]]
        got = await self.store.txn([Compare.mod_revision(key, "==", rev)], ops)
        if not got.succeeded:
            return None
        return {
            s: kv.value
            for s, kv in zip(reads, got.results[1:], strict=False)
            if isinstance(kv, KeyValue)
        }

    async def read_group(
        self, topic: str, partition: int, group: str, consumer: str, count: int, block_s: float
    ) -> list[Entry]:
        """Deliver new entries to ``consumer``, waiting up to ``block_s`` for one."""
        key = seq_key(topic, partition)
        wake = self._wakeups.register(key)
        try:
            entries = await self._deliver(topic, partition, group, consumer, count)
            if entries or block_s <= 0:
                return entries
            try:
                async with asyncio.timeout(block_s):
                    await wake.wait()
            except TimeoutError:
                pass
            return await self._deliver(topic, partition, group, consumer, count)
        finally:
            self._wakeups.forget(key, wake)

    async def _deliver(
        self, topic: str, partition: int, group: str, consumer: str, count: int
    ) -> list[Entry]:
        count = min(count, _BATCH)
        while True:
            cursor, rev, first, last = await self._cursor_and_bounds(topic, partition, group)
            start = max(cursor.last, first - 1) + 1
            seqs = list(range(start, min(last, start + count - 1) + 1))
            if not seqs:
                return []
            now = self._clock.time()
            cursor.last = seqs[-1]
            cursor.pending += [Pending(s, consumer, 1, now) for s in seqs]
            found = await self._save(topic, partition, group, cursor, rev, seqs)
            if found is not None:
                return [Entry(seq_id(s), decode_entry(found[s])[1]) for s in seqs if s in found]

    async def ack(self, topic: str, partition: int, group: str, ids: Sequence[str]) -> int:
        """Drop ``ids`` from the pending list."""
        wanted = {parse_position(i, 0) for i in ids}
        while True:
            cursor, rev = await self._cursor(topic, partition, group)
            kept = [p for p in cursor.pending if p.id not in wanted]
            acked = len(cursor.pending) - len(kept)
            if not acked:
                return 0
            cursor.pending = kept
            if await self._save(topic, partition, group, cursor, rev, ()) is not None:
                return acked

    async def claim_pending(
        self, topic: str, partition: int, group: str, consumer: str, min_idle_s: float, count: int
    ) -> list[Entry]:
        """Give idle pending entries to ``consumer`` (dropping trimmed ones)."""
        while True:
            cursor, rev = await self._cursor(topic, partition, group)
            first, _ = await self._bounds(topic, partition)
            now = self._clock.time()
            cursor.pending.sort(key=lambda p: p.id)
            kept = [p for p in cursor.pending if p.id >= first]
            chosen = [p for p in kept if now - p.at >= min_idle_s][:count]
            if not chosen and len(kept) == len(cursor.pending):
                return []
            for p in chosen:
                p.consumer, p.deliveries, p.at = consumer, p.deliveries + 1, now
            cursor.pending = kept
            if await self._save(topic, partition, group, cursor, rev, ()) is not None:
                found = await self._fetch(topic, partition, [p.id for p in chosen])
                return [
                    Entry(seq_id(p.id), decode_entry(found[p.id])[1], p.deliveries)
                    for p in chosen
                    if p.id in found
                ]

    async def set_group_position(self, topic: str, partition: int, group: str, after: str) -> None:
        """Move the last-delivered position."""
        while True:
            cursor, rev = await self._cursor(topic, partition, group)
            _, last = await self._bounds(topic, partition)
            cursor.last = parse_position(after, last)
            if await self._save(topic, partition, group, cursor, rev, ()) is not None:
                return

    def position_before(self, entry_id: str) -> str:
        """The id one below ``entry_id`` (``"0"`` below the first)."""
        seq = parse_position(entry_id, 0)
        return seq_id(seq - 1) if seq > 1 else START

    async def lag(self, topic: str, partition: int, group: str) -> GroupLag:
        """Pending and undelivered counts."""
        cursor, _ = await self._cursor(topic, partition, group)
        first, last = await self._bounds(topic, partition)
        return GroupLag(len(cursor.pending), max(0, last - max(cursor.last, first - 1)))

    async def trim(
        self, topic: str, partition: int, *, max_len: int | None, min_id: str | None
    ) -> int:
        """Delete the oldest entries, 100 per transaction."""
        await self._check(topic, partition)
        first, last = await self._bounds(topic, partition)
        cut = first  # first seq to keep
        if max_len is not None:
            cut = max(cut, last - max_len + 1)
        if min_id is not None:
            cut = max(cut, min(parse_position(min_id, last), last + 1))
        doomed = list(range(first, cut))
        for start in range(0, len(doomed), _BATCH):
            ops: list[Op] = [
                Delete(entry_key(topic, partition, s)) for s in doomed[start : start + _BATCH]
            ]
            await self.store.txn([], ops)
        return len(doomed)

    async def id_at(self, topic: str, partition: int, when: float) -> str:
        """Binary search over the dense sequence by append time."""
        await self._check(topic, partition)
        first, last = await self._bounds(topic, partition)
        lo, hi = first, last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            kv = await self.store.get(entry_key(topic, partition, mid))
            if kv is None:  # trimmed under us: everything up to it is older
                lo = mid + 1
            elif decode_entry(kv.value)[0] >= when:
                hi = mid
            else:
                lo = mid + 1
        return seq_id(lo)

    # membership

    async def heartbeat(self, topic: str, group: str, member: str, ttl_s: float) -> list[str]:
        """Live members (see :class:`~keel.events._store_members.Members`)."""
        return await self._members.heartbeat(topic, group, member, ttl_s)

    async def claim_partition(
        self, topic: str, group: str, partition: int, member: str, ttl_s: float
    ) -> bool:
        """Take or renew a partition claim."""
        return await self._members.claim(topic, group, partition, member, ttl_s)

    async def release_partition(self, topic: str, group: str, partition: int, member: str) -> None:
        """Release a partition claim held by ``member``."""
        await self._members.release(topic, group, partition, member)

    async def aclose(self) -> None:
        """Stop the wake-up watch and revoke member leases (the store stays open)."""
        await self._wakeups.aclose()
        await self._members.aclose()

    def __repr__(self) -> str:
        return f"StoreEngine({self.store!r})"
