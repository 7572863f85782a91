"""Delivery on every engine: groups, load balancing within a group, per-key order, handlers."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from keel.events import Bus, Event, Message, Subscription
from keel.observe.tracing import tracer
from tests.events._helpers import FAST, settled, take


async def test_publish_returns_partitioned_ids_and_keys_pick_one_partition(bus: Bus) -> None:
    """An id is '<partition>:<engine id>'; events of one key share a partition."""
    ids = [await bus.publish("orders.created", {"n": n}, key="order-1") for n in range(3)]
    assert len({i.split(":")[0] for i in ids}) == 1
    many = await bus.publish_many("orders.created", [Message({"n": n}) for n in range(8)])
    assert len(many) == 8 and len(set(many)) == 8
    assert await bus.topics() == ["orders.created"]


async def test_every_group_gets_every_event_and_each_consumer_a_share(bus: Bus) -> None:
    """Two consumers of group a split the events; group b alone gets them all."""
    a1 = bus.subscribe("orders", group="a", name="a1", **FAST)
    a2 = bus.subscribe("orders", group="a", name="a2", **FAST)
    b1 = bus.subscribe("orders", group="b", name="b1", **FAST)
    async with a1, a2, b1:
        await settled(a1, a2)
        await settled(b1)
        await bus.publish_many("orders", [Message({"n": n}, f"k{n % 7}") for n in range(60)])
        a_events: list[Event] = []
        got_b = await take(b1, 60)
        enough = asyncio.Event()

        async def collect(sub: Subscription) -> None:
            while True:
                event = await sub.next()
                a_events.append(event)
                await event.ack()
                if len(a_events) >= 60:
                    enough.set()

        async with asyncio.timeout(20), asyncio.TaskGroup() as tasks:
            collectors = [tasks.create_task(collect(s)) for s in (a1, a2)]
            await enough.wait()
            for task in collectors:
                task.cancel()
    assert sorted(e.payload["n"] for e in got_b) == list(range(60))
    assert sorted(e.payload["n"] for e in a_events) == list(range(60))


async def test_events_of_one_key_are_handled_in_order_with_concurrency(bus: Bus) -> None:
    """With 8 handlers at once, each key's events still run one at a time, in order."""
    seen: dict[str, list[int]] = defaultdict(list)
    running: set[str] = set()
    overlap = []
    done = asyncio.Event()

    @bus.handler("ledger", group="g", concurrency=8, **FAST)
    async def handle(event: Event) -> None:
        key = event.key or ""
        if key in running:
            overlap.append(key)
        running.add(key)
        await asyncio.sleep(random.uniform(0, 0.01))
        seen[key].append(event.payload["n"])
        running.discard(key)
        if sum(map(len, seen.values())) == 120:
            done.set()

    runner = asyncio.create_task(bus.run())
    try:
        await asyncio.sleep(0.5)
        messages = [Message({"n": n}, f"acct-{n % 5}") for n in range(120)]
        for start in range(0, 120, 10):
            await bus.publish_many("ledger", messages[start : start + 10])
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert not overlap
    for key, ns in seen.items():
        assert ns == sorted(ns), key
        assert len(ns) == 24


async def test_start_earliest_sees_events_published_before_the_group(bus: Bus) -> None:
    """A new group with start='earliest' gets retained events; 'new' does not."""
    await bus.publish_many("early", [Message({"n": n}) for n in range(5)])
    async with bus.subscribe("early", group="old", start="earliest", **FAST) as sub:
        assert sorted(e.payload["n"] for e in await take(sub, 5)) == list(range(5))
    async with bus.subscribe("early", group="fresh", **FAST) as sub:
        await settled(sub)
        await bus.publish("early", {"n": 99})
        assert [e.payload["n"] for e in await take(sub, 1)] == [99]


async def test_trace_context_travels_in_headers(bus: Bus) -> None:
    """A publish inside a span carries its trace id to the consumer."""
    provider = TracerProvider()
    async with bus.subscribe("traced", group="g", **FAST) as sub:
        await settled(sub)
        with tracer(provider).start_as_current_span("publish") as span:
            await bus.publish("traced", {"n": 1}, headers={"x-custom": "yes"})
            trace_id = span.get_span_context().trace_id
        (event,) = await take(sub, 1)
    assert event.headers["x-custom"] == "yes"
    assert "traceparent" in event.headers
    carried = trace.get_current_span(event.trace_context()).get_span_context()
    assert carried.trace_id == trace_id


async def test_bytes_payloads_round_trip(bus: Bus) -> None:
    """A bytes payload comes back as the same bytes."""
    async with bus.subscribe("blobs", group="g", **FAST) as sub:
        await settled(sub)
        await bus.publish("blobs", b"\x00\x01binary\xff", key="b")
        (event,) = await take(sub, 1)
    assert event.payload == b"\x00\x01binary\xff"


async def test_metrics_count_published_delivered_and_acked(bus: Bus) -> None:
    """The published, delivered and acked counters move."""
    async with bus.subscribe("counted", group="g", **FAST) as sub:
        await settled(sub)
        await bus.publish_many("counted", [Message({"n": n}) for n in range(3)])
        await take(sub, 3)
    registry = bus.metrics.registry
    assert registry.get_sample_value("keel_events_published_total", {"topic": "counted"}) == 3
    labels = {"topic": "counted", "group": "g"}
    assert registry.get_sample_value("keel_events_delivered_total", labels) == 3
    assert registry.get_sample_value("keel_events_acked_total", labels) == 3
