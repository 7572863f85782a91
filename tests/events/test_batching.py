"""Acks and reads are batched: far fewer engine calls than events, and nothing left unsent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from keel.errors import ValidationError
from keel.events import Bus, Engine, EventsMetrics, Message, SubscribeSettings
from tests.events._helpers import FAST, take


class CountingEngine:
    """A real engine, with its ``ack`` and ``read_group`` calls counted."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.acks = 0
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ack(self, topic: str, partition: int, group: str, ids: Sequence[str]) -> int:
        self.acks += 1
        return await self.inner.ack(topic, partition, group, ids)

    async def read_group(self, *args: Any) -> Any:
        self.reads += 1
        return await self.inner.read_group(*args)


async def test_acks_are_batched_and_all_sent_when_the_subscription_closes(engine: Engine) -> None:
    """200 events acked one by one cost a few engine acks; none is pending after close."""
    counting = CountingEngine(engine)
    bus = Bus(counting, partitions=2, metrics=EventsMetrics())
    await bus.publish_many("batched", [Message({"n": n}, f"k{n % 8}") for n in range(200)])
    async with bus.subscribe("batched", group="g", start="earliest", **FAST) as sub:
        got = await take(sub, 200)
    assert len({e.id for e in got}) == 200
    assert counting.acks <= 20, f"{counting.acks} ack calls for 200 events"
    assert counting.reads <= 40, f"{counting.reads} reads for 200 events"
    for stats in await bus.lag("batched"):
        assert (stats.pending, stats.undelivered) == (0, 0)


async def test_linger_can_be_turned_off_and_is_checked(bus: Bus) -> None:
    """linger_s=0 reads again at once; a negative or huge linger is refused."""
    for bad in (-0.1, 2.0):
        with pytest.raises(ValidationError, match="linger_s"):
            SubscribeSettings(linger_s=bad)
    async with bus.subscribe("eager", group="g", linger_s=0, **FAST) as sub:
        await bus.publish("eager", {"n": 1})
        (event,) = await take(sub, 1)
    assert event.payload == {"n": 1}
