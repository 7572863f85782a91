"""kill -9 of SQLite store processes: leases expire, acked writes stay, the file stays sound."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

import keel
from keel.store import EventType
from tests._procs import Children
from tests.backends.sqlite._procs import CHILD, check_file

pytestmark = pytest.mark.slow


async def test_a_killed_lease_owner_loses_its_keys_within_ttl(
    tmp_path: Path, children: Children
) -> None:
    """kill -9 of a lease owner: its key is deleted within TTL + 2 s, watchers see the DELETE."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    ttl = 2
    owner = await children.start(CHILD, "lease", url, "owned/by-child", ttl)
    lease_id, put_rev = await owner.expect("READY")
    watcher = await children.start(CHILD, "watcher", url, "owned/", 1)
    await watcher.expect("READY")
    async with keel.connect(url) as store:
        async with store.watch("owned/by-child", start_revision=int(put_rev) + 1) as events:
            owner.kill9()
            await owner.wait()
            killed_at = time.monotonic()
            async with asyncio.timeout(ttl + 2):
                event = await anext(events)
            waited = time.monotonic() - killed_at
        assert event.type is EventType.DELETE and waited < ttl + 2
        assert event.prev_kv is not None and event.prev_kv.lease == int(lease_id)
        assert await store.get("owned/by-child") is None
        assert await store.time_to_live(int(lease_id)) is None
    _, kind, key = await watcher.expect("EV", timeout_s=10)
    assert (kind, key) == (EventType.DELETE.value, "owned/by-child")


async def test_a_killed_writer_keeps_every_acknowledged_write(
    tmp_path: Path, children: Children
) -> None:
    """kill -9 in a write loop: every put the writer saw acknowledged is in the file."""
    db = tmp_path / "keel.db"
    url = f"sqlite:///{db}"
    writer = await children.start(CHILD, "writer", url, "acked", 0)
    for _ in range(random.randrange(20, 120)):
        await writer.expect("ACK")
    writer.kill9()
    await writer.wait()
    while await writer.line():  # acks already written to the pipe before the kill
        pass
    acked = {f[1]: int(f[2]) for f in (line.split() for line in writer.lines) if f[0] == "ACK"}
    async with keel.connect(url) as store:
        kvs, _ = await store.range("acked/")
        present = {kv.key: kv.mod_revision for kv in kvs}
    assert acked.items() <= present.items()
    revision, revs = check_file(db)
    assert revs == list(range(2, revision + 1))


async def test_random_kills_never_corrupt_the_file(tmp_path: Path, children: Children) -> None:
    """20 rounds of kill -9 at random points: integrity_check ok, revisions gap-free."""
    db = tmp_path / "keel.db"
    url = f"sqlite:///{db}"
    rng = random.Random(20)
    for round_no in range(20):
        writers = [await children.start(CHILD, "writer", url, f"r{round_no}/{w}", 0) for w in "ab"]
        for writer in writers:
            await writer.expect("ACK")
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        for writer in writers:
            writer.kill9()
        for writer in writers:
            await writer.wait()
        revision, revs = check_file(db)
        assert revs == list(range(2, revision + 1)), f"round {round_no}"
    async with keel.connect(url) as store:
        _, now = await store.range("")
        assert now == revision
        assert await store.put("after", b"ok") == revision + 1
