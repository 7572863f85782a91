"""The SQLite writer and its threads: group commit, per-write isolation, cached counters, close."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.backends.sqlite import SqliteStore, _leases
from keel.backends.sqlite._gate import WriteGate
from keel.backends.sqlite._txn import WriteTxn
from keel.backends.sqlite._worker import JobKind, Worker
from keel.errors import LeaseNotFoundError, StoreClosedError, StoreUnavailableError
from keel.store import Put
from keel.testing import FakeClock
from tests._procs import Children
from tests.backends.sqlite._procs import CHILD, check_file


def url_of(path: Path) -> str:
    """The sqlite URL of a file."""
    return f"sqlite:///{path}"


@asynccontextmanager
async def sqlite_store(path: Path, **options: Any) -> AsyncIterator[SqliteStore]:
    """An open SQLite store on ``path``."""
    async with keel.connect(url_of(path), **options) as store:
        assert isinstance(store, SqliteStore)
        yield store


@asynccontextmanager
async def writer_held(store: SqliteStore) -> AsyncIterator[None]:
    """Keep the writer thread busy, so the writes queued meanwhile form one group."""
    started, release = threading.Event(), threading.Event()

    def hold(_: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    assert store._writer is not None
    held = store._writer.submit(JobKind.PLAIN, hold)
    assert await asyncio.to_thread(started.wait, 10)
    try:
        yield
    finally:
        release.set()
        async with asyncio.timeout(10):
            await held


def commits(store: SqliteStore) -> int:
    """How many transactions the store's writer committed."""
    assert store._writer is not None
    return store._writer.commits


async def outcomes(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Each future's result or exception, in order."""
    async with asyncio.timeout(10):
        return await asyncio.gather(*futures, return_exceptions=True)


def put_then_fail(key: str, error: BaseException) -> Callable[[WriteTxn], None]:
    """A write that changes a key and then raises (its change must vanish)."""

    def fn(txn: WriteTxn) -> None:
        txn.put_one(key, b"doomed", 0)
        raise error

    return fn


async def test_concurrent_puts_share_commits_and_keep_their_own_revisions(tmp_path: Path) -> None:
    """64 concurrent puts: distinct gap-free revisions, each readable, fewer commits than puts."""
    db = tmp_path / "keel.db"
    async with sqlite_store(db) as store:
        first = await store.put("warm", b"up")
        before = commits(store)
        keys = [f"c/{i}" for i in range(64)]
        async with asyncio.timeout(10):
            revs = await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
        assert sorted(revs) == list(range(first + 1, first + 65))
        kvs, now = await store.range("c/")
        assert {kv.key: kv.mod_revision for kv in kvs} == dict(zip(keys, revs, strict=True))
        assert now == first + 64
        assert commits(store) - before < 32
    revision, event_revs = check_file(db)
    assert revision == now and event_revs == list(range(2, now + 1))


async def test_a_failing_write_in_a_group_fails_alone(tmp_path: Path) -> None:
    """A write that raises after changing a key is undone; the writes around it commit."""
    async with sqlite_store(tmp_path / "keel.db") as store:
        base = await store.put("warm", b"up")
        before = commits(store)
        async with writer_held(store):
            futures = [
                store._write(lambda txn: txn.put_one("a", b"1", 0)),
                store._write(put_then_fail("b", RuntimeError("bad step"))),
                store._write(lambda txn: txn.run((), (Put("c1", b"x"), Put("c2", b"y")), ())),
                store._write(lambda txn: txn.put_one("d", b"4", 0)),
            ]
        a, bad, c, d = await outcomes(futures)
        assert isinstance(bad, RuntimeError)
        assert a == base + 1 and c == (True, [None, None]) and d == base + 3
        assert commits(store) - before == 1
        assert await store.get("b") is None
        kvs, now = await store.range("")
        assert {kv.key: kv.mod_revision for kv in kvs} == {
            "warm": base,
            "a": base + 1,
            "c1": base + 2,
            "c2": base + 2,
            "d": base + 3,
        }
        assert now == base + 3
        history = [(e.revision, e.kv.key) async for e in watch_until(store, base + 1, now)]
        assert history == [(base + 1, "a"), (base + 2, "c1"), (base + 2, "c2"), (base + 3, "d")]


async def watch_until(store: SqliteStore, start: int, last: int) -> AsyncIterator[Any]:
    """The events from ``start`` up to revision ``last``, replayed from the log."""
    async with store.watch("", prefix=True, start_revision=start) as events:
        async with asyncio.timeout(10):
            async for event in events:
                yield event
                if event.revision == last and events.get_nowait() is None:
                    return


async def test_a_storage_error_in_a_group_retries_the_others_alone(tmp_path: Path) -> None:
    """A sqlite error in one write rolls the group back; the others commit one by one."""
    async with sqlite_store(tmp_path / "keel.db") as store:
        base = await store.put("warm", b"up")
        before = commits(store)
        async with writer_held(store):
            futures = [
                store._write(lambda txn: txn.put_one("a", b"1", 0)),
                store._write(put_then_fail("b", sqlite3.OperationalError("simulated I/O"))),
                store._write(lambda txn: txn.put_one("c", b"3", 0)),
            ]
        a, bad, c = await outcomes(futures)
        assert isinstance(bad, StoreUnavailableError) and "simulated I/O" in str(bad)
        assert (a, c) == (base + 1, base + 2)
        assert commits(store) - before == 2
        assert await store.get("b") is None
        assert (await store.range(""))[1] == base + 2


async def test_a_lease_error_in_a_group_leaves_the_others(tmp_path: Path) -> None:
    """keepalive of an unknown lease fails inside a group; a grant beside it stands."""
    async with sqlite_store(tmp_path / "keel.db") as store:
        now = time.monotonic()  # the store's clock
        async with writer_held(store):
            futures = [
                store._write(lambda txn: _leases.keepalive(txn, 12345, now)),
                store._write(lambda txn: _leases.grant(txn, 30, now)),
            ]
        missing, lease = await outcomes(futures)
        assert isinstance(missing, LeaseNotFoundError)
        assert await store.leases() == [lease.id]


async def test_revisions_stay_gap_free_when_two_stores_interleave(tmp_path: Path) -> None:
    """Two stores (two connections) alternate writes: each reloads what the other moved."""
    db = tmp_path / "keel.db"
    async with sqlite_store(db) as a, sqlite_store(db) as b:
        revs = [await (a if i % 2 else b).put(f"k/{i % 3}", b"v") for i in range(40)]
        assert revs == list(range(revs[0], revs[0] + 40))
        await a.compact(revs[10])
        assert await b.put("after", b"compact") == revs[-1] + 1
        status = await b.status()
        assert status.compact_revision == revs[10]
    revision, event_revs = check_file(db)
    assert event_revs == list(range(revs[10], revision + 1))


async def test_a_lease_granted_elsewhere_expires_on_this_stores_next_write(
    tmp_path: Path,
) -> None:
    """The cached earliest deadline is read again after another connection grants a lease."""
    clock = FakeClock()
    db = tmp_path / "keel.db"
    async with sqlite_store(db, clock=clock) as mine, sqlite_store(db, clock=clock) as theirs:
        await mine.put("warm", b"up")  # mine now caches "no lease"
        lease = await theirs.grant(5)
        await theirs.put("eph", b"x", lease=lease.id)
        clock.advance(6)
        # No await between the advance and the put: no reaper runs first.
        with pytest.raises(LeaseNotFoundError):
            await mine.put("eph2", b"y", lease=lease.id)
        assert await mine.get("eph") is None


async def test_keepalive_moves_the_deadline_past_the_cached_bound(tmp_path: Path) -> None:
    """A kept-alive lease survives its first deadline and expires at the new one."""
    clock = FakeClock()
    async with sqlite_store(tmp_path / "keel.db", clock=clock) as store:
        lease = await store.grant(5)
        clock.advance(4)
        await store.keepalive(lease.id)  # deadline 9; the cached bound is still 5
        clock.advance(4)
        await store.put("k", b"alive", lease=lease.id)  # due check at 8 finds nothing due
        clock.advance(2)
        with pytest.raises(LeaseNotFoundError):
            await store.put("k", b"late", lease=lease.id)
        assert await store.get("k") is None


async def test_close_finishes_the_queued_writes_first(tmp_path: Path) -> None:
    """Writes queued before close() commit; later ones fail with StoreClosedError."""
    db = tmp_path / "keel.db"
    store = await keel.connect(url_of(db))
    assert isinstance(store, SqliteStore)
    async with writer_held(store):
        futures = [store._write(lambda txn, i=i: txn.put_one(f"k/{i}", b"v", 0)) for i in range(5)]
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0)  # let close() start while the writes wait
    async with asyncio.timeout(10):
        await closing
    revs = await outcomes(futures)
    assert revs == [2, 3, 4, 5, 6]
    with pytest.raises(StoreClosedError):
        await store.put("late", b"v")
    assert check_file(db) == (6, [2, 3, 4, 5, 6])


@pytest.mark.slow
async def test_kill9_during_group_commits_loses_no_acknowledged_write(
    tmp_path: Path, children: Children
) -> None:
    """kill -9 of a process whose 8 writers share commits: every acked put is in the file."""
    db = tmp_path / "keel.db"
    url = url_of(db)
    for round_no in range(3):
        writer = await children.start(CHILD, "burst", url, f"r{round_no}", 8)
        for _ in range(200 + 150 * round_no):
            await writer.expect("ACK")
        writer.kill9()
        await writer.wait()
        while await writer.line():  # acks already in the pipe before the kill
            pass
        acked = {f[1]: int(f[2]) for f in (line.split() for line in writer.lines) if f[0] == "ACK"}
        async with sqlite_store(db) as store:
            kvs, _ = await store.range(f"r{round_no}/")
        assert acked.items() <= {kv.key: kv.mod_revision for kv in kvs}.items()
        assert len(set(acked.values())) == len(acked)
        revision, event_revs = check_file(db)
        assert event_revs == list(range(2, revision + 1))


class _ThreadWinsTheRace(Worker):
    """A worker whose thread runs the close job and ends before ``close()`` looks at it."""

    closes = 0

    def submit(self, kind: JobKind, fn: Callable[[Any], Any], weight: int = 0) -> Any:
        future = super().submit(kind, fn, weight)
        if kind is JobKind.CLOSE:
            self._thread.join(10)
        return future

    def _close_connection(self) -> None:
        type(self).closes += 1
        super()._close_connection()


async def test_a_thread_that_ended_first_is_not_closed_twice(tmp_path: Path) -> None:
    """Closing twice would close a descriptor number another file may have been given since."""
    path = str(tmp_path / "t.db")
    worker = _ThreadWinsTheRace(
        "t", path, lambda: sqlite3.connect(path, check_same_thread=False), busy_timeout_s=1
    )
    worker.start()
    await worker.read(lambda conn: conn.execute("SELECT 1").fetchone())
    await worker.close()
    assert _ThreadWinsTheRace.closes == 1
    gate = WriteGate(path + "-lock")
    gate.close()
    gate.close()  # idempotent: the second call closes nothing
