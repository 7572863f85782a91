"""Several OS processes on one SQLite file: exactly-once watches and fair writers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import keel
from keel.store import EventType
from tests._procs import Children
from tests.backends.sqlite._procs import CHILD, check_file

pytestmark = pytest.mark.slow


async def test_two_writer_processes_and_a_watcher_process(
    tmp_path: Path, children: Children
) -> None:
    """Two writer processes and a watcher process: every event once, in revision order."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    per_writer = 60
    async with keel.connect(url) as store:
        await store.put("warm", b"up")
    watcher = await children.start(CHILD, "watcher", url, "mp/", 2 * per_writer)
    await watcher.expect("READY")
    writers = [await children.start(CHILD, "writer", url, f"mp/{w}", per_writer) for w in "ab"]
    acked: set[tuple[int, str]] = set()
    for writer in writers:
        for _ in range(per_writer):
            key, rev = await writer.expect("ACK")
            acked.add((int(rev), key))
        assert await writer.wait() == 0
    seen: list[tuple[int, str]] = []
    while len(seen) < 2 * per_writer:
        rev, kind, key = await watcher.expect("EV")
        assert kind == EventType.PUT.value
        seen.append((int(rev), key))
    assert await watcher.wait() == 0
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)
    assert len(set(seen)) == len(seen)
    assert set(seen) == acked
    revision, revs = check_file(tmp_path / "keel.db")
    assert revs == list(range(2, revision + 1))


async def test_writer_processes_make_fair_progress(tmp_path: Path, children: Children) -> None:
    """Two writer processes in tight loops each get a fair share of the writes."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.connect(url) as store:
        await store.put("warm", b"up")
    writers = [await children.start(CHILD, "timed", url, name, 2.0) for name in ("a", "b")]
    for writer in writers:
        await writer.expect("READY")
    for writer in writers:
        writer.send("GO")
    counts = [int((await writer.expect("DONE", timeout_s=60))[0]) for writer in writers]
    total = sum(counts)
    assert total > 0
    assert min(counts) >= 0.25 * total, counts


async def test_a_watch_in_this_process_sees_other_processes_writes(
    tmp_path: Path, children: Children
) -> None:
    """Writes by another process reach a watch here, in order, via the poller."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    async with keel.connect(url) as store, store.watch("x/", prefix=True) as events:
        writer = await children.start(CHILD, "writer", url, "x/k", 30)
        revs = [int((await writer.expect("ACK"))[1]) for _ in range(30)]
        async with asyncio.timeout(20):
            got = [await anext(events) for _ in range(30)]
    assert [e.revision for e in got] == revs
    assert [e.kv.key for e in got] == [f"x/k/{i}" for i in range(30)]
