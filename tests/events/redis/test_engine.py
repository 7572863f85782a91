"""The Redis Streams engine on a real redis-server: takeover, trimming, foreign entries, URLs."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from keel.errors import InvalidURLError, NotFoundError, StoreUnavailableError, ValidationError
from keel.events import END, START, GroupLag
from keel.events.redis import RedisEngine
from keel.events.redis._replies import text
from keel.events.redis._scripts import parse_id
from keel.testing import RedisServer


async def topic_with_group(engine: RedisEngine, records: int, partitions: int = 1) -> list[str]:
    """Topic ``t`` with group ``g`` from the start, and ``records`` entries on partition 0."""
    await engine.create_topic("t", partitions)
    await engine.create_group("t", "g", START)
    return await engine.append("t", 0, [b"%d" % i for i in range(records)])


async def until_blocked(engine: RedisEngine) -> None:
    """Return once a client is blocked on the server (polled: Redis sends no event for it)."""
    async with asyncio.timeout(5):
        while True:
            if (await engine.client.info("clients"))["blocked_clients"]:
                return
            await asyncio.sleep(0.01)


async def owners(engine: RedisEngine, key: str) -> dict[str, int]:
    """Pending entries per consumer of group ``g`` on ``key``."""
    summary = await engine.client.xpending(key, "g")
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


async def test_a_dead_consumers_pending_entries_are_taken_over(engine: RedisEngine) -> None:
    """XAUTOCLAIM gives an idle consumer's unacked entries to another, counting deliveries."""
    ids = await topic_with_group(engine, 5)
    got = await engine.read_group("t", 0, "g", "dead", 3, 0)
    assert [e.id for e in got] == ids[:3]
    assert await engine.claim_pending("t", 0, "g", "heir", 60, 10) == []  # not idle long enough
    await asyncio.sleep(0.06)
    claimed = await engine.claim_pending("t", 0, "g", "heir", 0.05, 2)
    assert [(e.id, e.data, e.deliveries) for e in claimed] == [
        (ids[0], b"0", 2),
        (ids[1], b"1", 2),
    ]
    key = engine._k("t").stream(0)
    assert await owners(engine, key) == {"dead": 1, "heir": 2}
    again = await engine.claim_pending("t", 0, "g", "heir", 0, 10)
    assert [(e.id, e.deliveries) for e in again] == [(ids[0], 3), (ids[1], 3), (ids[2], 2)]
    assert await engine.ack("t", 0, "g", [e.id for e in again]) == 3
    assert (await engine.lag("t", 0, "g")).pending == 0
    assert [e.id for e in await engine.read_group("t", 0, "g", "heir", 10, 0)] == ids[3:]


async def test_trim_by_max_len_and_min_id(engine: RedisEngine) -> None:
    """XTRIM MAXLEN keeps the newest entries, MINID drops those below an id; ids keep growing."""
    ids = await topic_with_group(engine, 10)
    assert await engine.trim("t", 0, max_len=6, min_id=None) == 4
    assert [e.id for e in await engine.read("t", 0, START, 100)] == ids[4:]
    assert await engine.trim("t", 0, max_len=None, min_id=ids[7]) == 3
    assert [e.id for e in await engine.read("t", 0, START, 100)] == ids[7:]
    assert await engine.trim("t", 0, max_len=2, min_id=ids[8]) == 1
    assert await engine.trim("t", 0, max_len=None, min_id=None) == 0
    (after,) = await engine.append("t", 0, [b"new"])
    assert parse_id(after) > parse_id(ids[-1])
    assert [e.id for e in await engine.read("t", 0, START, 100)] == [*ids[8:], after]


async def test_trimmed_pending_entries_are_dropped_not_claimed(engine: RedisEngine) -> None:
    """An entry trimmed while pending leaves the pending list at the next claim, unreturned."""
    ids = await topic_with_group(engine, 4)
    await engine.read_group("t", 0, "g", "dead", 4, 0)
    await engine.trim("t", 0, max_len=None, min_id=ids[2])
    claimed = await engine.claim_pending("t", 0, "g", "heir", 0, 10)
    assert [e.id for e in claimed] == ids[2:]
    assert (await engine.lag("t", 0, "g")).pending == 2


async def test_approximate_max_len_on_append(redis_server: RedisServer) -> None:
    """With max_len, appends trim (about) to it, never below it."""
    engine = await RedisEngine.connect(f"{redis_server.url}?prefix=t-approx:", max_len=10)
    try:
        await engine.create_topic("t", 1)
        for _ in range(30):
            await engine.append("t", 0, [b"x"] * 20)
        kept = len(await engine.read("t", 0, START, 10_000))
        assert 10 <= kept < 600
    finally:
        await engine.client.delete(engine._k("t").stream(0), engine._k("t").meta)
        await engine.aclose()


async def test_foreign_entries_come_back_empty_and_never_crash(engine: RedisEngine) -> None:
    """An entry XADDed with other fields reads as data b'' (the codec rejects it); ours is kept."""
    await topic_with_group(engine, 0)
    key = engine._k("t").stream(0)
    foreign = text(await engine.client.xadd(key, {"foo": "bar", "n": 1}))
    mixed = text(await engine.client.xadd(key, {"d": b"ours", "extra": "x"}))
    assert await engine.read("t", 0, START, 10) == [(foreign, b"", 1), (mixed, b"ours", 1)]
    got = await engine.read_group("t", 0, "g", "c", 10, 0)
    assert [(e.id, e.data) for e in got] == [(foreign, b""), (mixed, b"ours")]
    claimed = await engine.claim_pending("t", 0, "g", "c2", 0, 10)
    assert [(e.id, e.data) for e in claimed] == [(foreign, b""), (mixed, b"ours")]


async def test_a_blocking_read_wakes_on_append(engine: RedisEngine) -> None:
    """read_group blocks until an append, then returns it (bounded by a timeout)."""
    await topic_with_group(engine, 0)
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        reader = group.create_task(engine.read_group("t", 0, "g", "c", 10, 4.0))
        await until_blocked(engine)
        (new,) = await engine.append("t", 0, [b"late"])
    assert [(e.id, e.data) for e in reader.result()] == [(new, b"late")]


async def test_a_long_block_is_capped_below_the_socket_timeout(redis_server: RedisServer) -> None:
    """block_s above the client's socket timeout returns [] instead of a timeout error."""
    client = Redis.from_url(redis_server.url, socket_timeout=1.0)
    engine = RedisEngine(client, prefix="t-cap:", owns_client=True)
    try:
        await engine.create_topic("t", 1)
        await engine.create_group("t", "g", END)
        assert await engine.read_group("t", 0, "g", "c", 1, 5.0) == []
    finally:
        await client.delete(engine._k("t").stream(0), engine._k("t").meta, engine._k("t").groups)
        await engine.aclose()


async def test_unknown_topic_group_partition_and_ids(engine: RedisEngine) -> None:
    """Contract errors: NotFound for unknown topic/group, Validation for partition and ids."""
    await topic_with_group(engine, 1, partitions=2)
    with pytest.raises(NotFoundError):
        await engine.append("nope", 0, [b"x"])
    with pytest.raises(NotFoundError):
        await engine.read_group("t", 0, "nope", "c", 1, 0)
    with pytest.raises(NotFoundError):
        await engine.ack("t", 0, "nope", ["1-0"])
    with pytest.raises(ValidationError):
        await engine.read("t", 2, START, 1)
    with pytest.raises(ValidationError):
        await engine.read("t", 0, "not-an-id", 1)
    with pytest.raises(ValidationError):
        engine.position_before("12")
    assert engine.position_before("5-3") == "5-2"
    assert engine.position_before("5-0") == f"4-{2**64 - 1}"
    assert engine.position_before("0-0") == START


async def test_connect_urls(redis_server: RedisServer) -> None:
    """Bad URLs: InvalidURLError; no server: StoreUnavailableError (no secret); prefix, max_len."""
    with pytest.raises(InvalidURLError):
        await RedisEngine.connect("http://127.0.0.1:1")
    with pytest.raises(InvalidURLError):
        await RedisEngine.connect("redis+cluster://127.0.0.1")
    with pytest.raises(StoreUnavailableError) as caught:
        await RedisEngine.connect("redis://me:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(InvalidURLError):
        await RedisEngine.connect(f"{redis_server.url}?max_len=-3")
    engine = await RedisEngine.connect(f"{redis_server.url}?prefix=custom:&max_len=50")
    try:
        assert (engine.prefix, engine.max_len) == ("custom:", 50)
        assert "custom:" in repr(engine)
    finally:
        await engine.aclose()
        await engine.aclose()


async def test_redis_down_then_back() -> None:
    """A killed server gives StoreUnavailableError; once it is back the engine works again."""
    server = RedisServer().start()
    try:
        client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        engine = RedisEngine(client, owns_client=True)
        await topic_with_group(engine, 1)
        server.kill()
        for call in (
            engine.append("t", 0, [b"x"]),
            engine.read_group("t", 0, "g", "c", 1, 0.1),
            engine.heartbeat("t", "g", "m", 1),
            engine.topics(),
        ):
            with pytest.raises(StoreUnavailableError):
                await call
        server.start()
        await topic_with_group(engine, 0)  # no persistence: the topic is created again
        (new,) = await engine.append("t", 0, [b"back"])
        assert [e.id for e in await engine.read_group("t", 0, "g", "c", 1, 0)] == [new]
        await engine.aclose()
    finally:
        server.stop()


async def test_a_cancelled_reader_stops_whenever_the_cancel_lands(engine: RedisEngine) -> None:
    """Cancelling a read_group loop ends it at any point (redis-py on 3.11 may drop the cancel)."""
    await topic_with_group(engine, 0)

    async def reader() -> None:
        while True:
            await engine.read_group("t", 0, "g", "c", 1, 0.05)

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


async def test_cleanup_after_a_cancel_still_runs(engine: RedisEngine) -> None:
    """Engine calls in a finally block of a cancelled task complete (no spurious cancel)."""
    await topic_with_group(engine, 0)
    assert await engine.claim_partition("t", "g", 0, "m1", 5)
    released = asyncio.Event()

    async def owner() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await engine.release_partition("t", "g", 0, "m1")
            await engine.heartbeat("t", "g", "m1", 0)
            released.set()

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert released.is_set()
    assert await engine.claim_partition("t", "g", 0, "m2", 5)


async def test_idle_connections_closed_by_the_server_are_replaced() -> None:
    """After the server drops every client connection, the next calls reconnect and work."""
    with RedisServer() as server:
        engine = await RedisEngine.connect(server.url)
        try:
            ids = await topic_with_group(engine, 2)
            await engine.read_group("t", 0, "g", "c", 1, 0)
            other = Redis.from_url(server.url)
            try:
                await other.client_kill_filter(_type="normal", skipme=True)
            finally:
                await other.aclose()
            (new,) = await engine.append("t", 0, [b"after"])
            got = await engine.read_group("t", 0, "g", "c", 10, 0)
            assert [e.id for e in got] == [ids[1], new]
            assert await engine.ack("t", 0, "g", [ids[0], ids[1], new]) == 3
        finally:
            await engine.aclose()


async def test_a_resp2_client_reads_the_same(redis_server: RedisServer) -> None:
    """The short path parses RESP2 replies as well as RESP3 (redis-py 8's default)."""
    client = Redis.from_url(redis_server.url, protocol=2)
    engine = RedisEngine(client, prefix="t-resp2:", owns_client=True)
    try:
        await topic_with_group(engine, 0)
        (new,) = await engine.append("t", 0, [b"two"])
        assert await engine.read_group("t", 0, "g", "c", 10, 0.1) == [(new, b"two", 1)]
        assert await engine.ack("t", 0, "g", [new]) == 1
    finally:
        keys = engine._k("t")
        await client.delete(keys.stream(0), keys.meta, keys.groups)
        await engine.aclose()


async def test_a_frozen_server_times_out_as_unavailable() -> None:
    """A server that stops answering (SIGSTOP) gives StoreUnavailableError, then works again."""
    with RedisServer() as server:
        client = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        engine = RedisEngine(client, owns_client=True)
        try:
            await topic_with_group(engine, 1)
            server.pause()
            try:
                async with asyncio.timeout(10):
                    with pytest.raises(StoreUnavailableError):
                        await engine.append("t", 0, [b"x"])
                    with pytest.raises(StoreUnavailableError):
                        await engine.read_group("t", 0, "g", "c", 1, 0.1)
            finally:
                server.resume()
            # Commands sent during the freeze may still run once it ends; new ones work.
            (new,) = await engine.append("t", 0, [b"after"])
            got = await engine.read_group("t", 0, "g", "c", 10, 0)
            assert new in [e.id for e in got]
        finally:
            await engine.aclose()


async def test_closing_an_engine_hands_connections_back(redis_server: RedisServer) -> None:
    """An engine on a caller's client returns its kept connections to the pool on aclose."""
    client = Redis.from_url(redis_server.url)
    try:
        engine = RedisEngine(client, prefix="t-close:")
        await engine.create_topic("t", 1)
        await engine.append("t", 0, [b"x"])
        pool = client.connection_pool
        assert pool._in_use_connections
        await engine.aclose()
        assert not pool._in_use_connections
        assert await client.ping()
        await client.delete(engine._k("t").stream(0), engine._k("t").meta)
    finally:
        await client.aclose()


async def test_lag_after_trims_and_a_moved_position(engine: RedisEngine) -> None:
    """Undelivered counts stay exact where Redis cannot tell the lag (they are counted then)."""
    ids = await topic_with_group(engine, 10)
    await engine.read_group("t", 0, "g", "c", 3, 0)
    await engine.trim("t", 0, max_len=None, min_id=ids[2])
    await engine.set_group_position("t", 0, "g", ids[5])
    assert await engine.lag("t", 0, "g") == GroupLag(pending=3, undelivered=4)
    await engine.set_group_position("t", 0, "g", START)
    assert (await engine.lag("t", 0, "g")).undelivered == 8
    await engine.read_group("t", 0, "g", "c", 8, 0)
    assert await engine.lag("t", 0, "g") == GroupLag(pending=10, undelivered=0)
