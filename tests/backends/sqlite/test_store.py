"""SQLite backend specifics in one process: files, options, history, leases, sharing, errors."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

import keel
from keel.backends.sqlite import SqliteStore
from keel.backends.sqlite._gate import WriteGate
from keel.errors import CompactedError, StoreUnavailableError, ValidationError
from keel.store import EventType
from keel.testing import FakeClock
from tests._util import eventually
from tests.backends.sqlite._procs import check_file


def url_of(path: Path, query: str = "") -> str:
    """The sqlite URL of a file."""
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


async def test_directories_are_0700_and_files_0600(tmp_path: Path) -> None:
    """Created directories are 0700; the database, its WAL, SHM and lock file 0600."""
    db = tmp_path / "made" / "here" / "keel.db"
    async with keel.connect(url_of(db)) as store:
        await store.put("k", b"v")
        for directory in (db.parent, db.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for name in ("keel.db", "keel.db-wal", "keel.db-shm", "keel.db-lock"):
            assert stat.S_IMODE((db.parent / name).stat().st_mode) == 0o600, name


async def test_a_directory_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """A path under a regular file raises StoreUnavailable naming the path and the fix."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="cannot create the sqlite store"):
        await keel.connect(url_of(blocker / "sub" / "keel.db"))


async def test_bad_options_are_refused(tmp_path: Path) -> None:
    """Unknown synchronous modes and non-numeric retention are bad input."""
    with pytest.raises(ValidationError, match="synchronous"):
        await keel.connect(url_of(tmp_path / "a.db", "synchronous=off"))
    with pytest.raises(ValidationError, match="retention"):
        await keel.connect(url_of(tmp_path / "a.db", "retention=lots"))


async def test_status_names_the_file_and_the_durability(tmp_path: Path) -> None:
    """status() reports path, revision, keys under the root, leases, size and pragmas."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db, "synchronous=normal")) as store:
        lease = await store.grant(30)
        rev = await store.put("a", b"1", lease=lease.id)
        status = await store.status()
    assert (status.backend, status.endpoint, status.revision) == ("sqlite", str(db), rev)
    assert (status.keys, status.leases) == (1, 1)
    assert status.size_bytes is not None and status.size_bytes > 0
    assert status.details["journal_mode"] == "wal"
    assert status.details["synchronous"] == "normal"
    assert status.details["events_kept"] == "1"


async def test_retention_compacts_automatically(tmp_path: Path) -> None:
    """With retention=5 the log keeps about 5 events and old revisions raise Compacted."""
    async with keel.connect(url_of(tmp_path / "keel.db", "retention=5")) as store:
        first = await store.put("k", b"0")
        for i in range(1, 20):
            last = await store.put("k", str(i).encode())
        status = await store.status()
        assert status.compact_revision == last - 4
        assert status.details["events_kept"] == "5"
        with pytest.raises(CompactedError):
            await store.range("k", revision=first)
        kvs, _ = await store.range("k", revision=last - 4)
        assert [kv.value for kv in kvs] == [b"15"]
        with pytest.raises(CompactedError):
            async with store.watch("k", start_revision=first) as events, asyncio.timeout(5):
                await anext(events)


async def test_history_reads_span_roots_and_deletes(tmp_path: Path) -> None:
    """Past reads undo newer events per root, including prefix deletes and lease revokes."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db, "root=/a/")) as a, keel.connect(url_of(db, "root=/b/")) as b:
        lease = await a.grant(30)
        await a.put("x/1", b"1", lease=lease.id)
        await b.put("x/1", b"other root")
        before = await a.put("x/2", b"2")
        await a.delete("x/", prefix=True)
        await a.put("x/3", b"3")
        await a.revoke(lease.id)
        kvs, _ = await a.range("x/", revision=before)
        assert [(kv.key, kv.value) for kv in kvs] == [("x/1", b"1"), ("x/2", b"2")]
        kvs, _ = await b.range("", revision=before)
        assert [(kv.key, kv.value) for kv in kvs] == [("x/1", b"other root")]


async def test_replay_and_live_tail_meet_without_gap_or_duplicate(tmp_path: Path) -> None:
    """A watch opened from the past while writes continue sees each revision exactly once."""
    async with keel.connect(url_of(tmp_path / "keel.db")) as store:
        first = await store.put("w/0", b"0")

        async def write() -> int:
            rev = first
            for i in range(1, 150):
                rev = await store.put(f"w/{i % 7}", b"v")
            return rev

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.02)
        async with store.watch("w/", prefix=True, start_revision=first) as events:
            last = await writer
            async with asyncio.timeout(10):
                seen = [(await anext(events)).revision for _ in range(last - first + 1)]
            assert events.get_nowait() is None
    assert seen == list(range(first, last + 1))


async def test_stores_on_one_file_share_a_poller_and_close_alone(tmp_path: Path) -> None:
    """Two stores of one process share one poller; closing one leaves the other working."""
    db = tmp_path / "keel.db"
    first = await keel.connect(url_of(db))
    second = await keel.connect(url_of(db))
    assert isinstance(first, SqliteStore) and isinstance(second, SqliteStore)
    assert first._hub is second._hub
    mine = await first.watch("k").start()
    theirs = await second.watch("k").start()
    await first.close()
    async with asyncio.timeout(5):
        assert [e async for e in mine] == []
    rev = await second.put("k", b"1")
    async with asyncio.timeout(5):
        event = await anext(theirs)
    assert event.revision == rev
    await theirs.aclose()
    await second.close()


async def test_a_cancelled_write_leaves_the_store_consistent(tmp_path: Path) -> None:
    """Cancelling callers mid-write never leaves the connection inside a transaction."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db)) as store:
        tasks = [asyncio.create_task(store.put(f"c/{i}", b"v")) for i in range(40)]
        await asyncio.sleep(0.005)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rev = await store.put("after", b"ok")
        kvs, now = await store.range("c/")
        assert now == rev and len(kvs) == rev - 2
    revision, revs = check_file(db)
    assert revision == rev and revs == list(range(2, rev + 1))


async def test_a_held_write_lock_times_out_as_unavailable(tmp_path: Path) -> None:
    """A writer that holds the lock past busy_timeout_s makes others fail, then recover."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db, "busy_timeout_s=0.3")) as store:
        gate = WriteGate(str(db) + "-lock")
        gate.acquire(1.0)
        try:
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.put("k", b"blocked")
        finally:
            gate.release()
            gate.close()
        rev = await store.put("k", b"free")
        kv = await store.get("k")
        assert kv is not None and (kv.value, kv.mod_revision) == (b"free", rev)


async def test_injected_clock_drives_lease_expiry(tmp_path: Path) -> None:
    """With a FakeClock, moving time past the TTL expires the lease and deletes its key."""
    clock = FakeClock()
    async with keel.connect(url_of(tmp_path / "keel.db"), clock=clock) as store:
        lease = await store.grant(5)
        await store.put("eph", b"x", lease=lease.id)
        async with store.watch("eph") as events:
            clock.advance(6)
            async with asyncio.timeout(5):
                event = await anext(events)
        assert event.type is EventType.DELETE
        assert await store.time_to_live(lease.id) is None


async def test_a_reboot_expires_every_lease(tmp_path: Path) -> None:
    """A database last used under another boot id drops its leases and their keys."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db)) as store:
        lease = await store.grant(3600)
        rev = await store.put("owned", b"x", lease=lease.id)
        await store.put("kept", b"y")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE name = 'boot_id'")
    conn.close()
    async with keel.connect(url_of(db)) as store:
        assert await store.leases() == []
        assert await store.get("owned") is None
        assert await store.get("kept") is not None
        async with store.watch("owned", start_revision=rev + 1) as events:
            async with asyncio.timeout(5):
                event = await anext(events)
        assert event.type is EventType.DELETE


async def test_closing_one_watch_while_events_flow_spares_the_others(tmp_path: Path) -> None:
    """A watch closed as an event is fanned out never makes its neighbours miss that event."""
    async with keel.connect(url_of(tmp_path / "keel.db")) as store:
        for _ in range(20):
            leaving = await store.watch("k").start()
            staying = await store.watch("k").start()
            first = await store.put("k", b"1")
            async with asyncio.timeout(5):
                await anext(leaving)
            await leaving.aclose()
            second = await store.put("k", b"2")
            async with asyncio.timeout(5):
                got = [(await anext(staying)).revision for _ in range(2)]
            await staying.aclose()
            assert got == [first, second]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


async def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    """A SQLite file with foreign tables is refused by name and gets no keel table."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(ValidationError, match=r"another application \(tables: users\)"):
        await keel.connect(url_of(db))
    assert _tables(db) == {"users"}


async def test_a_meta_table_without_a_schema_version_is_refused(tmp_path: Path) -> None:
    """A lone ``meta`` table that keel did not write is not taken for a keel store."""
    db = tmp_path / "meta.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    with pytest.raises(ValidationError, match="no keel schema version"):
        await keel.connect(url_of(db))
    assert _tables(db) == {"meta"}


async def test_a_newer_schema_version_is_refused_and_kept(tmp_path: Path) -> None:
    """A file written by a newer keel is refused with the fix, and left as it was."""
    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db)) as store:
        await store.put("k", b"v")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema'")
    with pytest.raises(ValidationError, match=r"schema version 99.*upgrade keel"):
        await keel.connect(url_of(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == (99,)
        assert conn.execute("SELECT count(*) FROM kv").fetchone() == (1,)


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    """Arbitrary bytes at the path name the file and the fix."""
    db = tmp_path / "notes.txt"
    db.write_text("not a database\n" * 200)
    with pytest.raises(StoreUnavailableError, match="not a valid keel database"):
        await keel.connect(url_of(db))
    assert db.read_text() == "not a database\n" * 200


async def test_the_poller_hurries_after_key_changes_not_after_lease_renewals(
    tmp_path: Path,
) -> None:
    """Polling every 2 ms follows a change of keys; a lease kept alive leaves it at 10 ms."""
    from keel.backends.sqlite._poller import POLL_INTERVAL_S, QUIET_POLL_INTERVAL_S

    db = tmp_path / "keel.db"
    async with keel.connect(url_of(db)) as store, keel.connect(url_of(db)) as other:
        assert isinstance(store, SqliteStore) and store._hub is not None
        hub = store._hub
        watch = await store.watch("k").start()
        lease = await other.grant(30)
        await asyncio.sleep(0.4)  # quiet for longer than the hurry lasts
        assert hub._interval() == QUIET_POLL_INTERVAL_S
        version = hub._data_version
        await other.keepalive(lease.id)  # the file changes, no key does
        await eventually(lambda: hub._data_version != version, 5, 0.005)
        assert hub._interval() == QUIET_POLL_INTERVAL_S
        await other.put("k", b"v")
        async with asyncio.timeout(5):
            assert (await anext(watch)).kv.value == b"v"
        assert hub._interval() == POLL_INTERVAL_S
        await watch.aclose()
