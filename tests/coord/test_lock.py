"""Lock, Semaphore and RWLock on every backend, with contenders in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from keel.coord import Lock, RWLock, Semaphore, Session
from keel.errors import ValidationError
from keel.store import Put, Store
from tests.coord._util import until_keys


@contextlib.asynccontextmanager
async def sessions(store: Store, n: int, ttl_s: int = 10) -> AsyncIterator[list[Session]]:
    """``n`` sessions on one store, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Session(store, ttl_s=ttl_s)) for _ in range(n)]


async def test_uncontended_acquire_and_release(store: Store) -> None:
    """An uncontended lock is owned at once; its token is its key's create_revision."""
    async with Session(store) as session:
        async with Lock(session, "jobs/report") as held:
            kv = await store.get(held.key)
            assert kv is not None and kv.create_revision == held.fencing_token
            assert held.key == f"locks/jobs/report/{session.lease_id:x}"
            assert not held.lost
        assert await store.get(held.key) is None
        assert held.lost.reason == "released"


async def test_try_acquire_fails_while_held_and_leaves_no_key(store: Store) -> None:
    """try_acquire returns None when another session owns the lock, and cleans up."""
    async with sessions(store, 2) as (a, b):
        held = await Lock(a, "x").acquire()
        assert await Lock(b, "x").try_acquire() is None
        kvs, _ = await store.range("locks/x/")
        assert [kv.key for kv in kvs] == [held.key]
        await held.release()
        again = await Lock(b, "x").try_acquire()
        assert again is not None and again.fencing_token > held.fencing_token
        await again.release()


async def test_grants_are_fifo_with_increasing_tokens(store: Store) -> None:
    """Waiters get the lock in the order they queued; tokens strictly increase."""
    async with sessions(store, 5) as group:
        first = await Lock(group[0], "fifo").acquire()
        order: list[int] = []
        tokens: list[int] = []

        async def contender(i: int) -> None:
            async with Lock(group[i], "fifo") as held:
                order.append(i)
                tokens.append(held.fencing_token)

        async with asyncio.TaskGroup() as tasks:
            for i in range(1, 5):
                tasks.create_task(contender(i))
                await until_keys(store, "locks/fifo/", i + 1)
            await first.release()
        assert order == [1, 2, 3, 4]
        assert tokens == sorted(tokens) and tokens[0] > first.fencing_token


async def test_mutual_exclusion_of_read_modify_write(store: Store) -> None:
    """8 contenders x 15 guarded read-modify-write cycles: the counter is exact."""
    await store.put("counter", b"0")
    async with sessions(store, 8) as group:

        async def worker(session: Session) -> None:
            for _ in range(15):
                async with Lock(session, "counter") as held:
                    kv = await store.get("counter")
                    assert kv is not None
                    await asyncio.sleep(0)
                    result = await store.txn(
                        [held.guard()], [Put("counter", str(int(kv.value) + 1).encode())]
                    )
                    assert result.succeeded

        async with asyncio.timeout(60), asyncio.TaskGroup() as tasks:
            for session in group:
                tasks.create_task(worker(session))
    final = await store.get("counter")
    assert final is not None and final.value == b"120"


async def test_cancelled_waiter_removes_its_key(store: Store) -> None:
    """Cancelling (or timing out) a waiting acquire deletes its key from the line."""
    async with sessions(store, 3) as (a, b, c):
        held = await Lock(a, "c").acquire()
        waiter = asyncio.ensure_future(Lock(b, "c").acquire())
        await until_keys(store, "locks/c/", 2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(TimeoutError):
            await Lock(c, "c").acquire(timeout_s=0.2)
        kvs, _ = await store.range("locks/c/")
        assert [kv.key for kv in kvs] == [held.key]
        await held.release()


async def test_lost_owner_cannot_commit_guarded_writes(store: Store) -> None:
    """When the owner's lease ends, the next waiter owns and the old guard fails."""
    async with Session(store) as b:
        a = await Session(store).__aenter__()
        held = await Lock(a, "g").acquire()
        waiter = asyncio.ensure_future(Lock(b, "g").acquire())
        await store.revoke(a.lease_id)  # as if a's lease expired under a pause
        async with asyncio.timeout(10):
            successor = await waiter
            await held.lost
        stale = await store.txn([held.guard()], [Put("resource", b"stale")])
        fresh = await store.txn([successor.guard()], [Put("resource", b"fresh")])
        assert not stale.succeeded and fresh.succeeded
        assert successor.fencing_token > held.fencing_token
        await successor.release()
        await a.__aexit__(None, None, None)


async def test_one_session_queues_its_own_contenders(store: Store) -> None:
    """Two tasks of one session take the same lock one after the other."""
    async with Session(store) as session:
        inside = 0
        peak = 0

        async def task() -> None:
            nonlocal inside, peak
            async with Lock(session, "local"):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.05)
                inside -= 1

        async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
            for _ in range(3):
                tasks.create_task(task())
        assert peak == 1


async def test_semaphore_admits_at_most_limit(store: Store) -> None:
    """A semaphore of 2 never has more than 2 holders among 5 contenders."""
    async with sessions(store, 5) as group:
        inside = 0
        peak = 0

        async def task(session: Session) -> None:
            nonlocal inside, peak
            for _ in range(3):
                async with await Semaphore(session, "pool", 2).acquire():
                    inside += 1
                    peak = max(peak, inside)
                    await asyncio.sleep(0.02)
                    inside -= 1

        async with asyncio.timeout(60), asyncio.TaskGroup() as tasks:
            for session in group:
                tasks.create_task(task(session))
        assert peak == 2
        assert (await store.range("semaphores/pool/"))[0] == []


async def test_semaphore_try_acquire(store: Store) -> None:
    """try_acquire takes a free slot and refuses when all are taken."""
    async with Session(store) as session:
        sem = Semaphore(session, "two", 2)
        first, second = await sem.try_acquire(), await sem.try_acquire()
        assert first is not None and second is not None
        assert await sem.try_acquire() is None
        await first.release()
        third = await sem.try_acquire()
        assert third is not None
        await second.release()
        await third.release()
    with pytest.raises(ValidationError, match="limit"):
        Semaphore(session, "zero", 0)


async def test_rwlock_readers_share_and_writers_wait(store: Store) -> None:
    """Readers share; a writer waits for them; a reader after a waiting writer waits too."""
    async with sessions(store, 3) as (a, b, c):
        r1 = await RWLock(a, "doc").read()
        r2 = await RWLock(b, "doc").try_read()
        assert r2 is not None
        writer = asyncio.ensure_future(RWLock(c, "doc").write())
        await until_keys(store, "rwlocks/doc/", 3)
        assert await RWLock(a, "doc").try_read() is None  # a writer waits ahead
        await r1.release()
        await r2.release()
        async with asyncio.timeout(10):
            w = await writer
        assert await RWLock(b, "doc").try_read() is None
        await w.release()
        r3 = await RWLock(b, "doc").try_read()
        assert r3 is not None
        await r3.release()


def test_bad_names_are_refused() -> None:
    """Lock names must be non-empty and relative."""
    from keel.backends.memory import MemoryStore

    session = Session(MemoryStore())
    for bad in ("", "/abs", "trailing/"):
        with pytest.raises(ValidationError, match="not valid"):
            Lock(session, bad)
