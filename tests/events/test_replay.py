"""Replay, lag and retention on every engine."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import NotFoundError, ValidationError
from keel.events import Bus, Message, Retention
from tests.events._helpers import FAST, settled, take


async def test_replay_from_an_id_redelivers_from_that_event(bus: Bus) -> None:
    """replay(from_id) re-delivers that event and every later one of its partition."""
    async with bus.subscribe("audit", group="g", **FAST) as sub:
        await settled(sub)
        ids = await bus.publish_many("audit", [Message({"n": n}, "one-key") for n in range(5)])
        await take(sub, 5)
        await bus.replay("audit", "g", from_id=ids[2])
        again = await take(sub, 3)
    assert [e.payload["n"] for e in again] == [2, 3, 4]
    assert [e.id for e in again] == ids[2:]


async def test_replay_from_a_time_redelivers_what_was_published_since(bus: Bus) -> None:
    """replay(from_time) re-delivers, on every partition, the events published at or after it."""
    async with bus.subscribe("audit", group="g", **FAST) as sub:
        await settled(sub)
        await bus.publish_many("audit", [Message({"n": n}, f"k{n}") for n in range(4)])
        await take(sub, 4)
        await asyncio.sleep(0.05)
        since = bus.clock.time()
        await asyncio.sleep(0.05)
        await bus.publish_many("audit", [Message({"n": n}, f"k{n}") for n in range(4, 10)])
        await take(sub, 6)
        await bus.replay("audit", "g", from_time=since)
        again = await take(sub, 6)
        assert sub.statistics()["held"] == 0
    assert sorted(e.payload["n"] for e in again) == list(range(4, 10))


async def test_replay_refuses_bad_requests(bus: Bus) -> None:
    """Unknown groups, ids of another form and missing events are refused clearly."""
    ids = await bus.publish_many("audit", [Message({"n": 1}, "k")])
    async with bus.subscribe("audit", group="g", **FAST):
        pass
    with pytest.raises(NotFoundError, match="group"):
        await bus.replay("audit", "nobody", from_time=0)
    with pytest.raises(ValidationError, match="exactly one"):
        await bus.replay("audit", "g")
    with pytest.raises(ValidationError, match="event id"):
        await bus.replay("audit", "g", from_id="no-colon")
    with pytest.raises(ValidationError, match="partition"):
        await bus.replay("audit", "g", from_id="99:" + ids[0].split(":")[1])
    with pytest.raises(NotFoundError, match="topic"):
        await bus.replay("nowhere", "g", from_time=0)


async def test_lag_counts_undelivered_and_pending_per_group(bus: Bus) -> None:
    """lag() reports each group's undelivered and pending events."""
    async with bus.subscribe("lagging", group="slow", **FAST) as sub:
        await settled(sub)
        await bus.publish_many("lagging", [Message({"n": n}, "k") for n in range(5)])
        (held,) = await take(sub, 1, ack=False)
        async with asyncio.timeout(10):
            while True:
                stats = (await bus.lag("lagging", "slow"))[0]
                if stats.pending + stats.undelivered >= 5:
                    break
                await asyncio.sleep(0.02)
        assert stats.pending >= 1
        assert stats.pending + stats.undelivered == 5
        await held.ack()


async def test_retention_by_count_keeps_the_newest_events(engine: object) -> None:
    """Retention(max_len) trims each partition to its newest events."""
    bus = Bus(engine, partitions=1, retention=Retention(max_len=3, max_age_s=None))  # type: ignore[arg-type]
    await bus.publish_many("kept", [Message({"n": n}) for n in range(10)])
    assert await bus.trim("kept") == 7
    assert [e.payload["n"] for e in await bus.read("kept", limit=100)] == [7, 8, 9]


async def test_retention_by_age_drops_old_events(engine: object) -> None:
    """Retention(max_age_s) deletes events older than the age."""
    bus = Bus(engine, partitions=2, retention=Retention(max_len=None, max_age_s=0.5))  # type: ignore[arg-type]
    await bus.publish_many("aged", [Message({"n": n}) for n in range(6)])
    await asyncio.sleep(1.1)
    await bus.publish_many("aged", [Message({"n": n}, f"k{n}") for n in range(6, 9)])
    assert await bus.trim("aged") == 6
    assert sorted(e.payload["n"] for e in await bus.read("aged", limit=100)) == [6, 7, 8]


async def test_publishers_enforce_retention_without_consumers(engine: object) -> None:
    """A publisher trims a partition every ``every_s`` even when nobody consumes."""
    keep = Retention(max_len=2, max_age_s=None, every_s=0.2)
    bus = Bus(engine, partitions=1, retention=keep)  # type: ignore[arg-type]
    for n in range(5):
        await bus.publish("busy", {"n": n})
    await asyncio.sleep(0.25)
    await bus.publish("busy", {"n": 5})
    assert [e.payload["n"] for e in await bus.read("busy", limit=100)] == [4, 5]
