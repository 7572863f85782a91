"""The transactional outbox: publish an event atomically with a state change.

::

    put = bus.outbox_put("orders.created", order, key="1")
    await store.txn([...], [Put("orders/1", data), put])
    async with Relay(store, bus):       # somewhere: moves outbox records to the bus
        ...

The event is written to ``events-outbox/<id>`` in the caller's own store
transaction, so it exists if and only if the state change committed. A
:class:`Relay` moves each record to the bus and deletes it, **once per
outbox id** even across a crash, by this protocol (one relay at a time, under
the lock ``events-outbox-relay``; every relay write is fenced by it):

1. *mark*: ``events-outbox-mark/<id>`` gets the time the publish begins;
2. *publish*: append the record (it carries ``keel-outbox-id: <id>`` in its
   headers) to its partition; the partition is a function of the key, or of
   the outbox id when there is no key, so it is known in advance;
3. *delete* the record and its mark in one transaction.

A relay that finds a marked record (its predecessor died between 1 and 3)
first reads the record's partition from a minute before the mark (clock skew
between hosts) and looks for an event carrying that outbox id: if one is
there the record is only deleted, otherwise it is published. Why not
idempotent appends with a dedupe window? Both engines would need it (Redis
streams have none), while this check costs reads only after a crash.

The one gap: a relay paused for longer than its session TTL (so another relay
took the lock) may still append its in-flight batch when it resumes; its
fenced delete then fails and the new relay's check finds the event, so the
worst case is one duplicate per record in that batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from keel._records import Rejected, decode, report
from keel.coord import Lock, Session
from keel.events._engine import START
from keel.events._model import EventRecord, decode_record, encode_record, partition_for
from keel.events._spans import relay_span
from keel.observe.spans import end_span
from keel.store import Compare, Delete, KeyValue, Op, Put, Range, Store

if TYPE_CHECKING:
    from keel.events._bus import Bus

__all__ = ["OUTBOX_HEADER", "Relay", "outbox_put"]

log = logging.getLogger("keel.events.outbox")

OUTBOX_HEADER = "keel-outbox-id"
_PREFIX = "events-outbox/"
_MARKS = "events-outbox-mark/"
_SKEW_S = 60.0
_DELETE_CHUNK = 60  # two deletes per record, under etcd's 128 ops


_last_us = 0


def _next_oid(when: float) -> str:
    """An outbox id that sorts after every earlier one of this process.

    Microseconds since the epoch, bumped past the previous id when two
    records share a microsecond (or the clock steps back), then a random tail
    for uniqueness across processes: records written one after the other by
    one process (a saga's transitions, say) are relayed in that order, so a
    key's events keep their order through the outbox.
    """
    global _last_us
    _last_us = max(int(when * 1_000_000), _last_us + 1)
    return f"{_last_us:016d}-{uuid.uuid4().hex[:12]}"


def outbox_put(
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int,
    now: float | None = None,
) -> Put:
    """The ``Put`` of one outbox record (validated and encoded now)."""
    when = time.time() if now is None else now
    oid = _next_oid(when)
    data = encode_record(
        topic,
        payload,
        key=key,
        headers={**(headers or {}), OUTBOX_HEADER: oid},
        published_at=when,
        max_bytes=max_bytes,
    )
    return Put(_PREFIX + oid, data)


class Relay:
    """Moves outbox records to the bus, once per outbox id (see the module docstring).

    Args:
        store: the store holding the outbox (where callers' transactions write).
        bus: the bus to publish to (any engine).
        session: the session to hold the relay lock with (default: one of its own).
        ttl_s: the TTL of that own session: after a relay crashes, the next one
            takes over after about this long.
        interval_s: pause between passes when the outbox is empty.
        batch: records per pass.
    """

    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        session: Session | None = None,
        ttl_s: int = 10,
        interval_s: float = 0.2,
        batch: int = 50,
    ) -> None:
        self.store = store
        self.bus = bus
        self._session = session
        self._ttl_s = ttl_s
        self._interval_s = interval_s
        self._batch = max(1, min(batch, 100))
        self._guard: list[Compare] = []
        self._rejected: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run(), name="keel-events-relay")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Hold the relay lock and relay until cancelled."""
        async with contextlib.AsyncExitStack() as stack:
            session = self._session
            if session is None:
                session = await stack.enter_async_context(Session(self.store, ttl_s=self._ttl_s))
            held = await stack.enter_async_context(Lock(session, "events-outbox-relay"))
            self._guard = [held.guard()]
            while not held.lost.is_set():
                try:
                    moved = await self.run_once()
                except Exception as exc:  # keep relaying through store or bus hiccups
                    log.warning("outbox relay pass failed: %s", exc)
                    moved = 0
                if moved == 0:
                    await self.bus.clock.sleep(self._interval_s)
            log.warning("outbox relay stopped: its lock was lost (%s)", held.lost.reason)

    async def run_once(self) -> int:
        """One pass over the oldest records; return how many were relayed."""
        got = await self.store.txn(
            [], [Range(_PREFIX, limit=self._batch + len(self._rejected)), Range(_MARKS)]
        )
        records, marks = got.results
        assert isinstance(records, list) and isinstance(marks, list)
        marked = {kv.key.removeprefix(_MARKS): kv.value for kv in marks}
        todo: list[tuple[str, KeyValue, EventRecord]] = []
        for kv in records:
            oid = kv.key.removeprefix(_PREFIX)
            if oid in self._rejected:
                continue
            record = decode("events-outbox", kv.key, kv.value, decode_record)
            if isinstance(record, Rejected):
                report(record)
                self._rejected.add(oid)
                continue
            todo.append((oid, kv, record))
        # commit order across writers (ids already follow it within one process)
        todo = sorted(todo[: self._batch], key=lambda item: item[1].create_revision)
        if not todo:
            return 0
        done = [
            oid
            for oid, _, rec in todo
            if oid in marked and await self._published(oid, rec, marked[oid])
        ]
        fresh = [(oid, kv, rec) for oid, kv, rec in todo if oid not in done]
        if fresh:
            await self._mark([(oid, kv) for oid, kv, _ in fresh])
            self._before_publish()
            await self._publish(fresh)
            self._after_publish()
        await self._delete([oid for oid, _, _ in todo])
        self.relayed += len(todo)
        return len(todo)

    async def _mark(self, items: list[tuple[str, KeyValue]]) -> None:
        now = str(self.bus.clock.time()).encode()
        compares = [
            *self._guard,
            *(Compare.mod_revision(kv.key, "==", kv.mod_revision) for _, kv in items),
        ]
        ops: list[Op] = [Put(_MARKS + oid, now) for oid, _ in items]
        if not (await self.store.txn(compares, ops)).succeeded:
            raise RuntimeError("outbox records changed under the relay (lock lost?)")

    async def _partition(self, oid: str, record: EventRecord) -> int:
        partitions = await self.bus.ensure_topic(record.topic)
        return partition_for(record.key or oid, partitions)

    async def _publish(self, items: list[tuple[str, KeyValue, EventRecord]]) -> None:
        batches: dict[tuple[str, int], list[tuple[bytes, EventRecord]]] = {}
        for oid, kv, record in items:
            slot = (record.topic, await self._partition(oid, record))
            batches.setdefault(slot, []).append((kv.value, record))
        for (topic, partition), batch in batches.items():
            # appended as written: each record keeps the trace context of its creation
            span = relay_span(topic, partition, (record.headers for _, record in batch))
            try:
                await self.bus.engine.append(topic, partition, [data for data, _ in batch])
            except BaseException as exc:
                end_span(span, exc)
                raise
            end_span(span)
            self.bus.metrics.published.labels(topic).inc(len(batch))

    async def _published(self, oid: str, record: EventRecord, mark: bytes) -> bool:
        """Whether an event carrying outbox id ``oid`` is already in its partition."""
        try:
            since = float(mark) - _SKEW_S
        except ValueError:
            since = 0.0
        engine = self.bus.engine
        partition = await self._partition(oid, record)
        position = (
            engine.position_before(await engine.id_at(record.topic, partition, since))
            if since > 0
            else START
        )
        while True:
            page = await engine.read(record.topic, partition, position, 100)
            for entry in page:
                found = decode("events", record.topic, entry.data, decode_record)
                if not isinstance(found, Rejected) and found.headers.get(OUTBOX_HEADER) == oid:
                    return True
            if len(page) < 100:
                return False
            position = page[-1].id

    async def _delete(self, oids: list[str]) -> None:
        for start in range(0, len(oids), _DELETE_CHUNK):
            chunk = oids[start : start + _DELETE_CHUNK]
            ops: list[Op] = [Delete(_PREFIX + oid) for oid in chunk]
            ops += [Delete(_MARKS + oid) for oid in chunk]
            if not (await self.store.txn(self._guard, ops)).succeeded:
                raise RuntimeError("outbox delete refused: the relay lock was lost")

    def _before_publish(self) -> None:
        """Hook between mark and publish (crash tests override it)."""

    def _after_publish(self) -> None:
        """Hook between publish and delete (crash tests override it)."""

    def __repr__(self) -> str:
        return f"Relay({self.store!r}, relayed={self.relayed})"
