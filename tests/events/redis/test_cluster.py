"""The Redis Streams engine on a real 3-master Redis Cluster: partitions spread, all usable."""

from __future__ import annotations

import asyncio

from redis.asyncio import RedisCluster as ClusterClient

import keel.events
from keel.events import START
from keel.events.redis import RedisEngine
from keel.testing import RedisCluster
from tests.events.redis._util import prefix

PARTITIONS = 8


async def until_blocked(engine: RedisEngine, count: int) -> None:
    """Return once ``count`` clients are blocked over all the cluster's nodes (polled, bounded)."""
    client = engine.client
    assert isinstance(client, ClusterClient)
    async with asyncio.timeout(5):
        while True:
            infos = await client.info("clients", target_nodes=ClusterClient.PRIMARIES)
            if sum(info["blocked_clients"] for info in infos.values()) >= count:
                return
            await asyncio.sleep(0.01)


async def test_partitions_of_one_topic_spread_over_the_nodes(cluster_engine: RedisEngine) -> None:
    """Each partition's stream is hash-tagged alone, so one topic lands on several masters."""
    await cluster_engine.create_topic("orders", PARTITIONS)
    client = cluster_engine.client
    assert isinstance(client, ClusterClient)
    keys = [cluster_engine._k("orders").stream(p) for p in range(PARTITIONS)]
    slots = {client.keyslot(key) for key in keys}
    nodes = {str(client.get_node_from_key(key)) for key in keys}
    assert len(slots) == PARTITIONS
    assert len(nodes) >= 2
    meta = cluster_engine._k("orders")
    assert client.keyslot(meta.meta) == client.keyslot(meta.members("g"))
    assert client.keyslot(meta.meta) == client.keyslot(meta.claim("g", 3))


async def test_every_partition_is_readable_and_group_ops_work(cluster_engine: RedisEngine) -> None:
    """Append, read, read_group, claim, ack, lag, setid and trim work on every partition."""
    engine = cluster_engine
    await engine.create_topic("orders", PARTITIONS)
    await engine.create_group("orders", "billing", START)
    for p in range(PARTITIONS):
        ids = await engine.append("orders", p, [f"{p}-a".encode(), f"{p}-b".encode()])
        assert [e.data for e in await engine.read("orders", p, START, 10)] == [
            f"{p}-a".encode(),
            f"{p}-b".encode(),
        ]
        got = await engine.read_group("orders", p, "billing", "c1", 10, 0)
        assert [e.id for e in got] == ids
        claimed = await engine.claim_pending("orders", p, "billing", "c2", 0, 10)
        assert [(e.id, e.deliveries) for e in claimed] == [(ids[0], 2), (ids[1], 2)]
        assert await engine.ack("orders", p, "billing", ids[:1]) == 1
        lag = await engine.lag("orders", p, "billing")
        assert (lag.pending, lag.undelivered) == (1, 0)
        await engine.set_group_position("orders", p, "billing", START)
        assert (await engine.lag("orders", p, "billing")).undelivered == 2
        assert await engine.trim("orders", p, max_len=1, min_id=None) == 1
    assert await engine.topics() == ["orders"]
    assert await engine.groups("orders") == ["billing"]


async def test_membership_and_claims_on_the_cluster(cluster_engine: RedisEngine) -> None:
    """Heartbeats and partition claims (Lua on one slot) run on the cluster as on one server."""
    engine = cluster_engine
    assert await engine.heartbeat("orders", "billing", "m1", 5) == ["m1"]
    assert await engine.heartbeat("orders", "billing", "m2", 5) == ["m1", "m2"]
    for p in range(PARTITIONS):
        assert await engine.claim_partition("orders", "billing", p, "m1", 5)
        assert not await engine.claim_partition("orders", "billing", p, "m2", 5)
        await engine.release_partition("orders", "billing", p, "m1")
        assert await engine.claim_partition("orders", "billing", p, "m2", 5)


async def test_blocking_reads_on_several_nodes_at_once(cluster_engine: RedisEngine) -> None:
    """One blocked XREADGROUP per partition; each wakes on its own append."""
    engine = cluster_engine
    await engine.create_topic("orders", PARTITIONS)
    await engine.create_group("orders", "billing", "$")
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        readers = [
            group.create_task(engine.read_group("orders", p, "billing", f"c{p}", 1, 3.0))
            for p in range(PARTITIONS)
        ]
        await until_blocked(engine, PARTITIONS)
        for p in range(PARTITIONS):
            await engine.append("orders", p, [str(p).encode()])
    assert [[e.data for e in r.result()] for r in readers] == [
        [str(p).encode()] for p in range(PARTITIONS)
    ]


async def test_the_bus_publishes_and_delivers_on_the_cluster(redis_cluster: RedisCluster) -> None:
    """keel.events.connect('redis+cluster://...'): keyed events all arrive, in order per key."""
    bus = await keel.events.connect(f"{redis_cluster.url}?prefix={prefix()}", partitions=4)
    try:
        async with bus.subscribe("orders.created", group="billing", start="earliest") as sub:
            for i in range(40):
                await bus.publish("orders.created", {"n": i}, key=f"order-{i % 5}")
            seen: dict[str | None, list[int]] = {}
            async with asyncio.timeout(20):
                while sum(map(len, seen.values())) < 40:
                    event = await sub.next()
                    seen.setdefault(event.key, []).append(event.payload["n"])
                    await event.ack()
        assert {k: sorted(v) for k, v in seen.items()} == seen
        assert sorted(n for v in seen.values() for n in v) == list(range(40))
    finally:
        await bus.aclose()


async def test_a_cancelled_reader_stops_on_the_cluster(cluster_engine: RedisEngine) -> None:
    """Cancelling a read_group loop on the cluster client ends it wherever the cancel lands."""
    await cluster_engine.create_topic("t", 1)
    await cluster_engine.create_group("t", "g", START)

    async def reader() -> None:
        while True:
            await cluster_engine.read_group("t", 0, "g", "c", 1, 0.05)

    for yields in range(12):
        task = asyncio.create_task(reader())
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:  # the cancellation was lost: stop the reader, then fail
            task.cancel()
            await asyncio.wait({task}, timeout=2)
        assert done and task.cancelled(), f"cancel after {yields} yields was lost"
