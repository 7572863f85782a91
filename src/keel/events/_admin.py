"""Operations on topics and groups: lag, replay, reading (tail, dead letters), retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel._records import Rejected, decode
from keel.errors import NotFoundError, ValidationError
from keel.events._engine import START
from keel.events._model import check_group, check_topic, decode_record, split_event_id

if TYPE_CHECKING:
    from keel.events._bus import Bus

__all__ = ["GroupStats", "StoredEvent", "lag", "read", "read_after", "replay", "trim_partition"]

_PAGE = 100
_WINDOWS_S = (60.0, 3600.0, 86400.0, None)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """How far one group is behind on a topic.

    Attributes:
        topic: the topic.
        group: the group.
        pending: events delivered and not yet acked.
        undelivered: events not yet delivered to the group.
        by_partition: ``(pending, undelivered)`` per partition.
    """

    topic: str
    group: str
    pending: int
    undelivered: int
    by_partition: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored (for tail, dead letters and inspection).

    Attributes:
        id: the event id.
        partition: its partition.
        entry_id: the engine id inside the partition.
        key: the key, or None.
        payload: the payload (None if the record is malformed).
        headers: the headers.
        published_at: Unix time of the publish (0 if malformed).
        error: why the record could not be decoded, or None.
    """

    id: str
    partition: int
    entry_id: str
    key: str | None
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    published_at: float = 0.0
    error: str | None = None


def _stored(topic: str, partition: int, entry_id: str, data: bytes) -> StoredEvent:
    eid = f"{partition}:{entry_id}"
    got = decode("events", f"{topic}/{eid}", data, lambda d: (r := decode_record(d), r.value()))
    if isinstance(got, Rejected):
        return StoredEvent(eid, partition, entry_id, None, None, error=got.reason)
    record, payload = got
    return StoredEvent(
        eid, partition, entry_id, record.key, payload, dict(record.headers), record.published_at
    )


async def _partitions(bus: Bus, topic: str) -> int:
    count = await bus.engine.partitions(check_topic(topic))
    if count is None:
        raise NotFoundError(f"topic {topic!r} does not exist: publish to it or check the name")
    return count


async def _check_group(bus: Bus, topic: str, group: str) -> int:
    count = await _partitions(bus, topic)
    if check_group(group) not in await bus.engine.groups(topic):
        raise NotFoundError(f"group {group!r} does not exist on topic {topic!r}")
    return count


async def lag(bus: Bus, topic: str, group: str | None) -> list[GroupStats]:
    """Per group (or the one named), pending and undelivered totals and per partition."""
    count = await _partitions(bus, topic)
    groups = [group] if group is not None else await bus.engine.groups(topic)
    if group is not None:
        await _check_group(bus, topic, group)
    stats = []
    for name in groups:
        parts = [await bus.engine.lag(topic, p, name) for p in range(count)]
        stats.append(
            GroupStats(
                topic,
                name,
                sum(x.pending for x in parts),
                sum(x.undelivered for x in parts),
                tuple((x.pending, x.undelivered) for x in parts),
            )
        )
    return stats


async def replay(
    bus: Bus, topic: str, group: str, *, from_id: str | None, from_time: float | None
) -> None:
    """Move ``group`` back (or forward) so it re-delivers from an event or a time.

    From an id: that event's partition restarts at the event itself, the
    other partitions at the time it was published. From a time: every
    partition restarts at its first event published at or after it. Events
    already pending stay pending; live consumers pick the new position up on
    their next read.

    Raises:
        ValidationError: neither or both of ``from_id`` and ``from_time``.
        NotFoundError: the topic, the group, or the event (trimmed) is missing.
    """
    if (from_id is None) == (from_time is None):
        raise ValidationError("give exactly one of from_id and from_time")
    engine = bus.engine
    count = await _check_group(bus, topic, group)
    positions: dict[int, str] = {}
    if from_id is not None:
        partition, entry_id = split_event_id(from_id)
        if partition >= count:
            raise ValidationError(
                f"event id {from_id!r} names partition {partition}; {topic!r} has {count}"
            )
        before = engine.position_before(entry_id)
        found = await engine.read(topic, partition, before, 1)
        if not found or found[0].id != entry_id:
            raise NotFoundError(
                f"event {from_id!r} is not in {topic!r} (trimmed, or never published)"
            )
        positions[partition] = before
        from_time = _stored(topic, partition, entry_id, found[0].data).published_at
    assert from_time is not None
    for p in range(count):
        if p not in positions:
            positions[p] = engine.position_before(await engine.id_at(topic, p, from_time))
    for p, position in positions.items():
        await engine.set_group_position(topic, p, group, position)


async def read_after(
    bus: Bus, topic: str, positions: dict[int, str], *, limit: int
) -> list[StoredEvent]:
    """Events after the given per-partition positions (``START`` if absent), by publish time."""
    count = await _partitions(bus, topic)
    found: list[StoredEvent] = []
    for p in range(count):
        entries = await bus.engine.read(topic, p, positions.get(p, START), limit)
        found += [_stored(topic, p, e.id, e.data) for e in entries]
    found.sort(key=lambda e: (e.published_at, e.partition))
    return found


async def read(bus: Bus, topic: str, *, limit: int) -> list[StoredEvent]:
    """The newest ``limit`` events of ``topic``, oldest first.

    Looks back over growing windows (a minute, an hour, a day, everything)
    until it finds ``limit`` events, so a tail of a big topic stays cheap.
    """
    count = await _partitions(bus, topic)
    now = bus.clock.time()
    found: list[StoredEvent] = []
    for window in _WINDOWS_S:
        found = []
        for p in range(count):
            position = START
            if window is not None:
                position = bus.engine.position_before(
                    await bus.engine.id_at(topic, p, now - window)
                )
            while True:
                page = await bus.engine.read(topic, p, position, _PAGE)
                found += [_stored(topic, p, e.id, e.data) for e in page]
                if len(page) < _PAGE:
                    break
                position = page[-1].id
        if len(found) >= limit:
            break
    found.sort(key=lambda e: (e.published_at, e.partition))
    return found[-limit:] if limit > 0 else []


async def trim_partition(bus: Bus, topic: str, partition: int) -> int:
    """Apply the bus's retention to one partition; return how many events were deleted."""
    keep = bus.retention
    min_id = None
    if keep.max_age_s is not None:
        min_id = await bus.engine.id_at(topic, partition, bus.clock.time() - keep.max_age_s)
    return await bus.engine.trim(topic, partition, max_len=keep.max_len, min_id=min_id)
