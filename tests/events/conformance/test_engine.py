"""The engine contract of keel.events, one suite over every engine: memory, sqlite, etcd, Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.errors import NotFoundError, ValidationError
from keel.events import END, START, Engine


async def _topic(engine: Engine, partitions: int = 2) -> str:
    await engine.create_topic("orders.created", partitions)
    return "orders.created"


async def test_create_topic_is_idempotent_and_keeps_the_count(engine: Engine) -> None:
    """Creating a topic twice keeps the first partition count; topics() lists it."""
    assert await engine.create_topic("t1", 3) == 3
    assert await engine.create_topic("t1", 5) == 3
    assert await engine.partitions("t1") == 3
    assert await engine.partitions("nope") is None
    await engine.create_topic("a.b", 1)
    assert await engine.topics() == ["a.b", "t1"]


async def test_concurrent_topic_creators_agree(engine: Engine) -> None:
    """Racing creators all see the same partition count."""
    counts = await asyncio.gather(*(engine.create_topic("race", n) for n in range(1, 6)))
    assert len(set(counts)) == 1


async def test_append_gives_increasing_ids_and_read_returns_them_in_order(engine: Engine) -> None:
    """Ids grow within a partition; read(after) returns the entries after a position."""
    topic = await _topic(engine)
    first = await engine.append(topic, 0, [b"a", b"b"])
    second = await engine.append(topic, 0, [b"c"])
    ids = first + second
    entries = await engine.read(topic, 0, START, 10)
    assert [e.id for e in entries] == ids
    assert [e.data for e in entries] == [b"a", b"b", b"c"]
    assert [e.data for e in await engine.read(topic, 0, ids[0], 10)] == [b"b", b"c"]
    assert [e.data for e in await engine.read(topic, 0, START, 2)] == [b"a", b"b"]
    assert await engine.read(topic, 1, START, 10) == []
    assert await engine.read(topic, 0, ids[-1], 10) == []


async def test_position_before_makes_a_read_start_at_that_id(engine: Engine) -> None:
    """read(after=position_before(id)) starts with that id."""
    topic = await _topic(engine)
    ids = await engine.append(topic, 1, [b"a", b"b", b"c"])
    for i, entry_id in enumerate(ids):
        got = await engine.read(topic, 1, engine.position_before(entry_id), 1)
        assert [e.id for e in got] == [ids[i]]


async def test_unknown_topic_group_and_partition_are_refused(engine: Engine) -> None:
    """A missing topic or group raises NotFoundError; a bad partition ValidationError."""
    with pytest.raises(NotFoundError):
        await engine.append("missing", 0, [b"x"])
    with pytest.raises(NotFoundError):
        await engine.create_group("missing", "g", START)
    topic = await _topic(engine)
    with pytest.raises(ValidationError):
        await engine.append(topic, 7, [b"x"])
    with pytest.raises(NotFoundError):
        await engine.read_group(topic, 0, "nogroup", "c1", 10, 0)
    with pytest.raises(NotFoundError):
        await engine.lag(topic, 0, "nogroup")


async def test_group_start_end_delivers_only_new_entries(engine: Engine) -> None:
    """A group created at END sees only entries appended afterwards."""
    topic = await _topic(engine)
    await engine.append(topic, 0, [b"old"])
    await engine.create_group(topic, "g", END)
    assert await engine.read_group(topic, 0, "g", "c1", 10, 0) == []
    await engine.append(topic, 0, [b"new"])
    got = await engine.read_group(topic, 0, "g", "c1", 10, 0)
    assert [e.data for e in got] == [b"new"]
    assert got[0].deliveries == 1


async def test_group_start_zero_delivers_everything_once(engine: Engine) -> None:
    """A group at START gets every entry; two consumers never get the same new entry."""
    topic = await _topic(engine)
    await engine.append(topic, 0, [b"%d" % i for i in range(6)])
    await engine.create_group(topic, "g", START)
    a = await engine.read_group(topic, 0, "g", "c1", 4, 0)
    b = await engine.read_group(topic, 0, "g", "c2", 4, 0)
    assert [e.data for e in a + b] == [b"%d" % i for i in range(6)]
    assert await engine.groups(topic) == ["g"]


async def test_create_group_is_idempotent(engine: Engine) -> None:
    """Creating an existing group moves neither its position nor its pending list."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    await engine.append(topic, 0, [b"a", b"b"])
    await engine.read_group(topic, 0, "g", "c1", 1, 0)
    await engine.create_group(topic, "g", END)
    await asyncio.gather(*(engine.create_group(topic, "g", START) for _ in range(3)))
    lag = await engine.lag(topic, 0, "g")
    assert (lag.pending, lag.undelivered) == (1, 1)


async def test_ack_removes_pending_and_counts_only_pending_ids(engine: Engine) -> None:
    """ack returns how many ids were pending; acking twice counts zero."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    await engine.append(topic, 0, [b"a", b"b", b"c"])
    got = await engine.read_group(topic, 0, "g", "c1", 10, 0)
    assert (await engine.lag(topic, 0, "g")).pending == 3
    assert await engine.ack(topic, 0, "g", [got[0].id, got[1].id]) == 2
    assert await engine.ack(topic, 0, "g", [got[0].id]) == 0
    lag = await engine.lag(topic, 0, "g")
    assert (lag.pending, lag.undelivered) == (1, 0)


async def test_read_group_blocks_until_an_append(engine: Engine) -> None:
    """A blocking read_group returns once an entry is appended."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", END)

    async def later() -> None:
        await asyncio.sleep(0.2)
        await engine.append(topic, 0, [b"late"])

    async with asyncio.timeout(10):
        task = asyncio.create_task(later())
        got = await engine.read_group(topic, 0, "g", "c1", 10, 5.0)
        await task
    assert [e.data for e in got] == [b"late"]


async def test_read_group_returns_empty_after_its_block_time(engine: Engine) -> None:
    """With nothing to deliver, read_group returns [] after block_s."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", END)
    async with asyncio.timeout(10):
        assert await engine.read_group(topic, 0, "g", "c1", 10, 0.2) == []


async def test_claim_pending_takes_idle_entries_and_counts_deliveries(engine: Engine) -> None:
    """claim_pending hands idle entries over, oldest first, with deliveries + 1."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    await engine.append(topic, 0, [b"a", b"b", b"c"])
    got = await engine.read_group(topic, 0, "g", "dead", 10, 0)
    assert await engine.claim_pending(topic, 0, "g", "c2", 60.0, 10) == []
    await asyncio.sleep(0.05)
    claimed = await engine.claim_pending(topic, 0, "g", "c2", 0.01, 2)
    assert [e.id for e in claimed] == [got[0].id, got[1].id]
    assert [e.deliveries for e in claimed] == [2, 2]
    assert [e.data for e in claimed] == [b"a", b"b"]
    await asyncio.sleep(0.05)
    again = await engine.claim_pending(topic, 0, "g", "c3", 0.01, 10)
    assert [(e.data, e.deliveries) for e in again] == [(b"a", 3), (b"b", 3), (b"c", 2)]
    assert (await engine.lag(topic, 0, "g")).pending == 3


async def test_claim_pending_drops_trimmed_entries(engine: Engine) -> None:
    """Pending ids whose entries were trimmed are dropped, not returned."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    ids = await engine.append(topic, 0, [b"a", b"b", b"c"])
    await engine.read_group(topic, 0, "g", "dead", 10, 0)
    await engine.trim(topic, 0, max_len=None, min_id=ids[2])
    claimed = await engine.claim_pending(topic, 0, "g", "c2", 0.0, 10)
    assert [e.data for e in claimed] == [b"c"]
    assert (await engine.lag(topic, 0, "g")).pending == 1


async def test_set_group_position_replays_and_skips(engine: Engine) -> None:
    """Moving the position back re-delivers; END skips everything undelivered."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    ids = await engine.append(topic, 0, [b"a", b"b", b"c"])
    await engine.read_group(topic, 0, "g", "c1", 10, 0)
    await engine.set_group_position(topic, 0, "g", engine.position_before(ids[1]))
    got = await engine.read_group(topic, 0, "g", "c1", 10, 0)
    assert [e.data for e in got] == [b"b", b"c"]
    await engine.set_group_position(topic, 0, "g", START)
    assert (await engine.lag(topic, 0, "g")).undelivered == 3
    await engine.set_group_position(topic, 0, "g", END)
    assert (await engine.lag(topic, 0, "g")).undelivered == 0


async def test_trim_by_count_and_by_id_keeps_later_ids_growing(engine: Engine) -> None:
    """trim deletes the oldest entries; later appends still get larger ids."""
    topic = await _topic(engine)
    ids = await engine.append(topic, 0, [b"%d" % i for i in range(10)])
    assert await engine.trim(topic, 0, max_len=6, min_id=None) == 4
    assert (await engine.read(topic, 0, START, 100))[0].data == b"4"
    assert await engine.trim(topic, 0, max_len=None, min_id=ids[8]) == 4
    assert [e.data for e in await engine.read(topic, 0, START, 100)] == [b"8", b"9"]
    more = await engine.append(topic, 0, [b"10"])
    got = await engine.read(topic, 0, engine.position_before(more[0]), 10)
    assert [e.data for e in got] == [b"10"]
    assert await engine.trim(topic, 0, max_len=10, min_id=None) == 0


async def test_id_at_finds_the_first_entry_at_a_time(engine: Engine) -> None:
    """id_at(when) is the first entry appended at or after ``when``."""
    topic = await _topic(engine)
    await engine.append(topic, 0, [b"early"])
    await asyncio.sleep(0.05)
    middle = time.time()
    await asyncio.sleep(0.05)
    await engine.append(topic, 0, [b"late1", b"late2"])
    found = await engine.id_at(topic, 0, middle)
    got = await engine.read(topic, 0, engine.position_before(found), 10)
    assert [e.data for e in got] == [b"late1", b"late2"]
    future = await engine.id_at(topic, 0, time.time() + 3600)
    assert await engine.read(topic, 0, engine.position_before(future), 10) == []


async def test_lag_counts_undelivered_and_pending(engine: Engine) -> None:
    """lag reports pending and undelivered per partition."""
    topic = await _topic(engine)
    await engine.create_group(topic, "g", START)
    await engine.append(topic, 1, [b"a", b"b", b"c", b"d"])
    await engine.read_group(topic, 1, "g", "c1", 1, 0)
    lag = await engine.lag(topic, 1, "g")
    assert (lag.pending, lag.undelivered) == (1, 3)


async def test_heartbeat_lists_live_members_and_leave(engine: Engine) -> None:
    """Members appear on heartbeat and leave with ttl 0."""
    assert await engine.heartbeat("t", "g", "m1", 5) == ["m1"]
    assert await engine.heartbeat("t", "g", "m2", 5) == ["m1", "m2"]
    assert await engine.heartbeat("t", "g", "m1", 0) == ["m2"]


async def test_partition_claims_are_exclusive(engine: Engine) -> None:
    """One member owns a partition; it renews; another takes it after release."""
    assert await engine.claim_partition("t", "g", 0, "m1", 5)
    assert not await engine.claim_partition("t", "g", 0, "m2", 5)
    assert await engine.claim_partition("t", "g", 0, "m1", 5)
    assert await engine.claim_partition("t", "g", 1, "m2", 5)
    await engine.release_partition("t", "g", 0, "m2")  # not its claim: no effect
    assert not await engine.claim_partition("t", "g", 0, "m2", 5)
    await engine.release_partition("t", "g", 0, "m1")
    assert await engine.claim_partition("t", "g", 0, "m2", 5)


async def test_claims_of_a_silent_member_expire(engine: Engine) -> None:
    """A member that stops renewing loses its claim and leaves the member list after its TTL."""
    await engine.heartbeat("t", "g", "m1", 1)
    assert await engine.claim_partition("t", "g", 0, "m1", 1)
    async with asyncio.timeout(15):
        while not await engine.claim_partition("t", "g", 0, "m2", 5):  # noqa: ASYNC110  # polls the engine
            await asyncio.sleep(0.2)
        while "m1" in await engine.heartbeat("t", "g", "m2", 5):  # noqa: ASYNC110  # polls the engine
            await asyncio.sleep(0.2)


async def test_entry_data_is_returned_unchanged(engine: Engine) -> None:
    """Arbitrary bytes (not JSON, with spaces and NULs) round-trip unchanged."""
    topic = await _topic(engine)
    data = [b"", b"\x00\xff not json", b"123 456", "é".encode()]
    await engine.append(topic, 0, data)
    assert [e.data for e in await engine.read(topic, 0, START, 10)] == data


async def test_bad_names_and_counts_are_refused(engine: Engine) -> None:
    """Topic and group names that would break key layouts, and bad counts, raise ValidationError."""
    for topic in ("a/b", "{x}", "", "has space"):
        with pytest.raises(ValidationError):
            await engine.create_topic(topic, 1)
    for count in (0, -1):
        with pytest.raises(ValidationError):
            await engine.create_topic("fine", count)
    await engine.create_topic("fine", 1)
    with pytest.raises(ValidationError):
        await engine.create_group("fine", "a/b", START)


async def test_concurrent_appends_keep_each_call_together_and_in_order(engine: Engine) -> None:
    """Appends racing on one partition all land; each call's records are consecutive, in order."""
    topic = await _topic(engine, 1)
    calls = [[f"{c}-{i}".encode() for i in range(1 + c % 3)] for c in range(30)]
    calls.append([b"big-%d" % i for i in range(150)])  # over one transaction's worth
    got = await asyncio.gather(*(engine.append(topic, 0, records) for records in calls))
    stored = await engine.read(topic, 0, START, 1000)
    assert len(stored) == sum(map(len, calls))
    where = {e.id: n for n, e in enumerate(stored)}
    for records, ids in zip(calls, got, strict=True):
        positions = [where[i] for i in ids]
        assert [stored[p].data for p in positions] == records
        if len(records) <= 100:  # one atomic append: nothing else in between
            assert positions == list(range(positions[0], positions[0] + len(records)))
