"""Watches: every change once, in order, with replay and compaction, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import CompactedError
from keel.store import Event, EventType, Put, Store, Watch


async def take(events: Watch, n: int, timeout_s: float = 5.0) -> list[Event]:
    """Read exactly ``n`` events, failing the test if they do not come in time."""
    out: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < n:
            out.append(await anext(events))
    return out


async def assert_quiet(events: Watch, wait_s: float = 0.3) -> None:
    """Assert that no further event arrives within ``wait_s``."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait_s):
            extra = await anext(events)
            pytest.fail(f"unexpected event {extra}")


async def test_watch_a_key_sees_puts_and_deletes(store: Store) -> None:
    """A key watch sees PUTs with their records and DELETEs with prev_kv."""
    async with store.watch("k") as events:
        r1 = await store.put("k", b"1")
        await store.put("other", b"x")
        await store.delete("k")
        got = await take(events, 2)
        await assert_quiet(events)
    assert [(e.type, e.kv.key) for e in got] == [(EventType.PUT, "k"), (EventType.DELETE, "k")]
    assert got[0].kv.value == b"1" and got[0].revision == r1 and got[0].prev_kv is None
    assert got[1].prev_kv is not None and got[1].prev_kv.value == b"1"
    assert got[1].revision == r1 + 2


async def test_watch_a_prefix(store: Store) -> None:
    """A prefix watch sees every key under it and nothing outside it."""
    async with store.watch("svc/", prefix=True) as events:
        await store.put("svc/a", b"1")
        await store.put("svcx", b"no")
        await store.put("svc/b/c", b"2")
        got = await take(events, 2)
        await assert_quiet(events)
    assert [e.kv.key for e in got] == ["svc/a", "svc/b/c"]


async def test_watch_the_whole_root(store: Store) -> None:
    """The empty prefix watches every key of the namespace."""
    async with store.watch("", prefix=True) as events:
        await store.put("a", b"1")
        await store.put("z/z", b"2")
        got = await take(events, 2)
    assert [e.kv.key for e in got] == ["a", "z/z"]


async def test_put_events_carry_prev_kv(store: Store) -> None:
    """An overwrite's event carries the record it replaced."""
    await store.put("k", b"old")
    async with store.watch("k") as events:
        await store.put("k", b"new")
        (event,) = await take(events, 1)
    assert event.kv.value == b"new" and event.kv.version == 2
    assert event.prev_kv is not None and event.prev_kv.value == b"old"


async def test_replay_from_a_past_revision_is_inclusive(store: Store) -> None:
    """start_revision in the past replays history from that revision, inclusive."""
    r1 = await store.put("h", b"1")
    r2 = await store.put("h", b"2")
    r3 = await store.put("h", b"3")
    async with store.watch("h", start_revision=r2) as events:
        got = await take(events, 2)
        r4 = await store.put("h", b"4")
        (live,) = await take(events, 1)
    assert [e.revision for e in got] == [r2, r3]
    assert live.revision == r4
    assert r1 < r2


async def test_default_start_is_after_now(store: Store) -> None:
    """With no start_revision a watch sees only changes made after it started."""
    await store.put("k", b"before")
    async with store.watch("k") as events:
        await assert_quiet(events, 0.2)
        await store.put("k", b"after")
        (event,) = await take(events, 1)
    assert event.kv.value == b"after"


async def test_start_below_compaction_raises_compacted(store: Store) -> None:
    """A watch from a compacted revision raises Compacted so the caller can re-list."""
    r1 = await store.put("c", b"1")
    await store.put("c", b"2")
    r3 = await store.put("c", b"3")
    await store.compact(r3)
    with pytest.raises(CompactedError) as info:
        async with store.watch("c", start_revision=r1) as events:
            await take(events, 1)
    assert info.value.compact_revision >= r3


async def test_many_writes_arrive_once_and_in_order(store: Store) -> None:
    """Concurrent writers: the watcher sees every revision exactly once, ascending."""
    async with store.watch("load/", prefix=True) as events:

        async def writer(w: int) -> list[int]:
            return [await store.put(f"load/{w}/{i % 5}", str(i).encode()) for i in range(40)]

        revisions = await asyncio.gather(*(writer(w) for w in range(5)))
        got = await take(events, 200, timeout_s=20)
        await assert_quiet(events, 0.2)
    seen = [e.revision for e in got]
    assert seen == sorted(seen)
    assert sorted(seen) == sorted(r for rs in revisions for r in rs)


async def test_txn_events_share_a_revision_in_op_order(store: Store) -> None:
    """A txn's writes reach a watcher together, with one revision."""
    async with store.watch("t/", prefix=True) as events:
        result = await store.txn([], [Put("t/b", b"2"), Put("t/a", b"1")])
        got = await take(events, 2)
    assert {e.kv.key for e in got} == {"t/a", "t/b"}
    assert {e.revision for e in got} == {result.revision}


async def test_two_watchers_are_independent(store: Store) -> None:
    """Closing one watch does not disturb another on the same key."""
    first = await store.watch("k").start()
    second = await store.watch("k").start()
    await store.put("k", b"1")
    await take(first, 1)
    await first.aclose()
    await store.put("k", b"2")
    got = await take(second, 2)
    await second.aclose()
    assert [e.kv.value for e in got] == [b"1", b"2"]


async def test_watch_ends_when_the_store_closes(store_url: str) -> None:
    """Closing the store ends its open watches instead of leaving them hanging."""
    import keel

    opened = await keel.connect(store_url)
    events = await opened.watch("k").start()
    await opened.close()
    async with asyncio.timeout(5):
        remaining = [e async for e in events]
    assert remaining == []
