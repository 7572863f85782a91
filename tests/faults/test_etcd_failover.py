"""etcd member deaths and restarts: calls move on, watches resume without gap or duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import keel
from keel.backends.etcd import EtcdStore
from keel.errors import StoreUnavailableError
from keel.store import Event, Store, Watch
from keel.testing import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture
def cluster3() -> Iterator[EtcdCluster]:
    """A fresh three-member cluster, stopped after the test."""
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture
def cluster1() -> Iterator[EtcdCluster]:
    """A fresh single-member cluster, stopped after the test."""
    with EtcdCluster(1) as cluster:
        yield cluster


class WriteLog:
    """What a writer loop learned: acknowledged revisions, and writes of unknown outcome."""

    def __init__(self) -> None:
        self.acked: dict[int, bytes] = {}
        self.unknown: set[bytes] = set()
        self.count = 0

    async def write(self, store: Store, n: int) -> None:
        """Do ``n`` acknowledged puts (unknown outcomes are noted and do not count)."""
        done = 0
        while done < n:
            value = f"v{self.count}".encode()
            self.count += 1
            try:
                rev = await store.put(f"loop/{self.count % 7}", value)
            except StoreUnavailableError:
                self.unknown.add(value)
                continue
            self.acked[rev] = value
            done += 1


async def collect_until(events: Watch, revisions: set[int], timeout_s: float) -> list[Event]:
    """Read events until every revision in ``revisions`` was seen."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while not revisions <= {e.revision for e in seen}:
            seen.append(await anext(events))
    return seen


def check_exactly_once(seen: list[Event], log: WriteLog) -> None:
    """Every acknowledged write once, in order; nothing seen that was not written."""
    revisions = [e.revision for e in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    by_revision = {e.revision: e.kv.value for e in seen}
    for rev, value in log.acked.items():
        assert by_revision.get(rev) == value, f"acknowledged write at {rev} missing"
    for rev, value in by_revision.items():
        assert rev in log.acked or value in log.unknown, f"phantom event at {rev}"


async def test_killing_the_member_in_use_moves_calls_and_watch(cluster3: EtcdCluster) -> None:
    """kill -9 of the member in use: writes continue elsewhere, the watch misses nothing."""
    url = f"{cluster3.url}?root=/failover/&timeout_s=5"
    async with asyncio.timeout(90), keel.connect(url) as store:
        assert isinstance(store, EtcdStore)
        used = cluster3.endpoints.index(store.endpoint)
        log = WriteLog()
        async with store.watch("loop/", prefix=True) as events:
            await log.write(store, 30)
            writer = asyncio.ensure_future(log.write(store, 60))
            await asyncio.sleep(0.05)
            cluster3.kill(used)
            await writer
            seen = await collect_until(events, set(log.acked), timeout_s=30)
        assert store.endpoint != cluster3.endpoints[used]
        assert store.statistics().failovers >= 1
    check_exactly_once(seen, log)


async def test_watch_resumes_across_a_restart_of_the_only_member(cluster1: EtcdCluster) -> None:
    """kill -9 and restart of a one-member cluster: watches resume from the next revision."""
    url = f"{cluster1.url}?root=/restart/&timeout_s=5"
    async with asyncio.timeout(90), keel.connect(url) as store:
        log = WriteLog()
        quiet = await store.watch("loop/0").start()  # nothing delivered before the restart
        async with store.watch("loop/", prefix=True) as events:
            await log.write(store, 20)
            first = await collect_until(events, set(log.acked), timeout_s=10)
            cluster1.kill(0)
            await asyncio.to_thread(cluster1.restart, 0)
            await log.write(store, 20)
            seen = first + await collect_until(
                events, set(log.acked) - {e.revision for e in first}, timeout_s=30
            )
        quiet_seen = await collect_until(
            quiet, {r for r in log.acked if log.acked[r] in _values_of(seen, "loop/0")}, 30
        )
        await quiet.aclose()
    check_exactly_once(seen, log)
    assert [e.kv.key for e in quiet_seen] == ["loop/0"] * len(quiet_seen)
    assert [e.revision for e in quiet_seen] == [e.revision for e in seen if e.kv.key == "loop/0"]


def _values_of(events: list[Event], key: str) -> set[bytes]:
    return {e.kv.value for e in events if e.kv.key == key}


async def test_a_paused_member_is_left_for_another(cluster3: EtcdCluster) -> None:
    """SIGSTOP of the member in use: reads and watches move on within the timeout."""
    url = f"{cluster3.url}?root=/paused/&timeout_s=4"
    async with asyncio.timeout(90), keel.connect(url) as store:
        assert isinstance(store, EtcdStore)
        used = cluster3.endpoints.index(store.endpoint)
        async with store.watch("k") as events:
            await store.put("k", b"before")
            assert (await anext(events)).kv.value == b"before"
            cluster3.pause(used)
            try:
                kv = await store.get("k")
                rev = await put_surely(store, "k", b"after")
                seen = await collect_until(events, {rev}, timeout_s=30)
            finally:
                cluster3.resume(used)
    assert kv is not None and kv.value == b"before"
    # A write of unknown outcome may have been applied as well as its retry.
    assert [e.kv.value for e in seen] == [b"after"] * len(seen) and seen[-1].revision == rev


async def put_surely(store: Store, key: str, value: bytes) -> int:
    """Put ``value``, as a careful caller does: after an unknown outcome, read before writing.

    If the paused member was the raft leader, a write proposed through
    another member can be lost with it; the store then says the outcome is
    unknown, which is right, and the caller checks the key.
    """
    for _ in range(5):
        try:
            return await store.put(key, value)
        except StoreUnavailableError:
            kv = await store.get(key)
            if kv is not None and kv.value == value:
                return kv.mod_revision
    raise AssertionError(f"no put of {key!r} was acknowledged in five tries")
