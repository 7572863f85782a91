"""The outbox: events written in the caller's store transaction, relayed once per outbox id."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest

import keel
import keel.events
from keel.events import OUTBOX_HEADER, Bus, Relay
from keel.store import Compare, Put, Store
from tests._procs import Children


async def _outbox(store: Store) -> int:
    kvs, _ = await store.range("events-outbox/")
    return len(kvs)


async def _published(bus: Bus, topic: str) -> Counter[str]:
    events = await bus.read(topic, limit=10_000) if topic in await bus.topics() else []
    return Counter(e.headers[OUTBOX_HEADER] for e in events)


async def test_an_outbox_event_commits_with_the_state_change(store: Store) -> None:
    """The event exists only if the caller's transaction committed; the relay moves it once."""
    bus = Bus(store)
    put = bus.outbox_put("orders.created", {"id": 1}, key="order-1")
    done = await store.txn([Compare.absent("orders/1")], [Put("orders/1", b"{}"), put])
    assert done.succeeded
    refused = bus.outbox_put("orders.created", {"id": 2}, key="order-2")
    assert not (await store.txn([Compare.absent("orders/1")], [refused])).succeeded
    relay = Relay(store, bus)
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    (event,) = await bus.read("orders.created")
    assert (event.payload, event.key) == ({"id": 1}, "order-1")
    assert await _outbox(store) == 0


async def test_a_relay_that_died_after_publishing_does_not_cause_a_duplicate(store: Store) -> None:
    """A marked and published record is only deleted by the next relay."""
    bus = Bus(store)
    await store.txn([], [bus.outbox_put("t", {"n": n}) for n in range(5)])
    dying = Relay(store, bus)
    dying._after_publish = _die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        await dying.run_once()
    assert await _outbox(store) == 5
    assert await Relay(store, bus).run_once() == 5
    counts = await _published(bus, "t")
    assert len(counts) == 5 and set(counts.values()) == {1}
    assert await _outbox(store) == 0


async def test_a_relay_that_died_before_publishing_is_completed(store: Store) -> None:
    """A marked, unpublished record is published by the next relay."""
    bus = Bus(store)
    await store.txn([], [bus.outbox_put("t", {"n": n}, key="k") for n in range(3)])
    dying = Relay(store, bus)
    dying._before_publish = _die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        await dying.run_once()
    await Relay(store, bus).run_once()
    counts = await _published(bus, "t")
    assert len(counts) == 3 and set(counts.values()) == {1}
    assert [e.payload["n"] for e in await bus.read("t")] == [0, 1, 2]


async def test_a_running_relay_moves_records_as_they_come(store: Store) -> None:
    """``async with Relay(...)`` relays continuously under its lock."""
    bus = Bus(store)
    async with Relay(store, bus, interval_s=0.05, ttl_s=2):
        for n in range(4):
            await store.txn([], [bus.outbox_put("live", {"n": n})])
        async with asyncio.timeout(15):
            while await _outbox(store):  # noqa: ASYNC110  # the relay has no event to wait on
                await asyncio.sleep(0.05)
    assert sorted((await _published(bus, "live")).values()) == [1, 1, 1, 1]


async def test_records_written_one_after_another_are_relayed_in_that_order(store: Store) -> None:
    """Outbox records of one key written in a row (same microsecond or not) keep their order."""
    bus = Bus(store)
    puts = [bus.outbox_put("seq", {"n": n}, key="one") for n in range(40)]  # one millisecond
    for put in puts:
        await store.txn([], [put])
    relay = Relay(store, bus, batch=7)  # batches cut the sequence in several places
    while await relay.run_once():
        pass
    got: list[int] = []  # in stream order (bus.read sorts by publish time)
    async with asyncio.timeout(20), bus.subscribe("seq", group="g", start="earliest") as sub:
        async for event in sub:
            got.append(event.payload["n"])
            await event.ack()
            if len(got) == 40:
                break
    assert got == list(range(40))


class _Died(Exception):
    pass


def _die() -> None:
    raise _Died


@pytest.mark.slow
@pytest.mark.parametrize("point", ["marked", "published"])
@pytest.mark.parametrize("engine", ["sqlite", "redis"])
async def test_kill_9_of_the_relay_publishes_each_event_once(
    point: str, engine: str, tmp_path: Path, children: Children, request: pytest.FixtureRequest
) -> None:
    """kill -9 between mark and publish, or publish and delete: each event is published once."""
    store_url = f"sqlite:///{tmp_path / 'keel.db'}"
    bus_url = store_url
    if engine == "redis":
        server = request.getfixturevalue("redis_server")
        bus_url = f"{server.url}?prefix=t-{uuid.uuid4().hex[:10]}:"
    async with keel.connect(store_url) as store:
        bus = await keel.events.connect(bus_url)
        try:
            for n in range(20):
                await store.txn([], [Put(f"orders/{n}", b"{}"), bus.outbox_put("paid", {"n": n})])
            child = await children.start("tests.events._relay_child", store_url, bus_url, point)
            await child.expect("READY")
            await child.expect(point.upper())
            child.kill9()
            await child.wait()
            async with Relay(store, bus, interval_s=0.05, ttl_s=2):
                async with asyncio.timeout(30):
                    while await _outbox(store):  # noqa: ASYNC110  # waits for the dead lock's TTL
                        await asyncio.sleep(0.1)
            counts = await _published(bus, "paid")
        finally:
            await bus.aclose()
    assert len(counts) == 20
    assert set(counts.values()) == {1}, counts


async def test_a_malformed_outbox_record_is_skipped(store: Store) -> None:
    """A record the relay cannot decode is reported and left alone; the others are relayed."""
    bus = Bus(store)
    await store.put("events-outbox/0000000000000-bad", b"\xff not an event")
    await store.txn([], [bus.outbox_put("t", {"n": 1})])
    relay = Relay(store, bus)
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    assert [e.payload for e in await bus.read("t")] == [{"n": 1}]
    assert await _outbox(store) == 1
